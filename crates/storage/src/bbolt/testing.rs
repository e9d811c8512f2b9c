//! Test-only tools for a **stopped** etcd member's bbolt file (`member/snap/db`): they
//! patch it in place, bypassing etcd, to make a member diverge as a bad disk would, so
//! that etcd's corruption checks can be compared with Skiff's. bbolt 1.3 checksums
//! only its meta pages, so a same-length change of bytes inside a value on a leaf page
//! is read back by etcd as it is. Never call these on a file a running member has open.

use std::os::unix::fs::FileExt;
use std::path::Path;

use super::reader::BoltReader;
use super::{BoltError, BoltResult};

/// Replaces every occurrence of `from` inside the values of the top-level bucket
/// `bucket` (the rows the file's current tree reaches, not stale copies in free pages)
/// with `to`, which must be as long, writing the file in place; returns how many were
/// replaced. The change is read back through a fresh [`BoltReader`] before returning.
pub fn replace_in_values(path: &Path, bucket: &[u8], from: &[u8], to: &[u8]) -> BoltResult<usize> {
    if from.len() != to.len() || from.is_empty() {
        return Err(BoltError::Invalid {
            path: path.to_path_buf(),
            reason: format!(
                "an in-place change keeps the length ({} bytes to {} bytes)",
                from.len(),
                to.len()
            ),
        });
    }
    let mut at = Vec::new();
    BoltReader::open(path)?.for_each_value_at(bucket, &mut |_, value, offset| {
        let mut i = 0;
        while let Some(pos) = find(&value[i..], from) {
            at.push(offset + (i + pos) as u64);
            i += pos + from.len();
        }
        Ok(())
    })?;
    let io = |source| BoltError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(io)?;
    for offset in &at {
        file.write_all_at(to, *offset).map_err(io)?;
    }
    file.sync_all().map_err(io)?;
    let mut left = 0;
    BoltReader::open(path)?.for_each_value_at(bucket, &mut |_, value, _| {
        left += usize::from(find(value, from).is_some());
        Ok(())
    })?;
    if left > 0 {
        return Err(BoltError::Invalid {
            path: path.to_path_buf(),
            reason: format!("{left} values still hold the bytes after the change"),
        });
    }
    Ok(at.len())
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bbolt::reader::Row;
    use crate::bbolt::writer::{BoltWriter, BucketBuilder};

    #[test]
    fn a_value_is_changed_in_place_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let mut w = BoltWriter::create(&path).unwrap();
        let mut b = BucketBuilder::new();
        for i in 0..200u32 {
            let value = if i == 150 {
                b"old-value".to_vec()
            } else {
                format!("v{i}").into_bytes()
            };
            b.put(&mut w, &i.to_be_bytes(), &value).unwrap();
        }
        let b = b.finish(&mut w).unwrap();
        w.finish(vec![(b"key".to_vec(), b)]).unwrap();
        assert_eq!(
            replace_in_values(&path, b"key", b"old-value", b"NEW-VALUE").unwrap(),
            1
        );
        let mut seen = Vec::new();
        BoltReader::open(&path)
            .unwrap()
            .for_each(b"key", &mut |row| {
                if let Row::Value { key, value } = row {
                    if key == 150u32.to_be_bytes() {
                        seen.push(value.to_vec());
                    }
                }
                Ok(())
            })
            .unwrap();
        assert_eq!(seen, vec![b"NEW-VALUE".to_vec()]);
        assert!(replace_in_values(&path, b"key", b"abc", b"ab").is_err());
    }
}
