//! etcdctl 3.4's output of `snapshot status` (its `DBStatus` printer) in each format:
//! `hash, revision, total keys, total size` (hash in hex, size in go-humanize's SI
//! units), a four-column table, Go's `encoding/json` of etcd's `snapshot.Status`
//! (`hash`, `revision`, `totalKey`, `totalSize`), `"Hash" : ...` fields; no protobuf
//! form (exit code 4, as etcdctl).

use skiff_storage::bbolt::status::DbStatus;

use super::json::Obj;
use super::{go, table, Format, Printer};

impl Printer {
    /// `snapshot status`.
    pub fn db_status(&mut self, s: &DbStatus) -> anyhow::Result<()> {
        let size = go::humanize_bytes(s.total_size);
        match self.format {
            Format::Simple => self.line(format!(
                "{:x}, {}, {}, {size}",
                s.hash, s.revision, s.total_key
            )),
            Format::Json => self.line(
                Obj::new()
                    .num("hash", s.hash)
                    .num("revision", s.revision)
                    .num("totalKey", s.total_key)
                    .num("totalSize", s.total_size)
                    .end(),
            ),
            Format::Fields => {
                self.line(format!("\"Hash\" : {}", s.hash));
                self.line(format!("\"Revision\" : {}", s.revision));
                self.line(format!("\"Keys\" : {}", s.total_key));
                self.line(format!("\"Size\" : {}", s.total_size));
            }
            Format::Table => {
                let t = table::render(
                    &["hash", "revision", "total keys", "total size"],
                    &[vec![
                        format!("{:x}", s.hash),
                        s.revision.to_string(),
                        s.total_key.to_string(),
                        size,
                    ]],
                );
                self.out.push_str(&t);
            }
            Format::Protobuf => return Err(self.unsupported()),
        }
        Ok(())
    }
}
