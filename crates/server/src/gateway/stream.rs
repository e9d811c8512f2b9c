//! Request bodies as grpc-gateway reads them: one JSON value for a unary call, a
//! sequence of JSON values (optionally separated by whitespace) for a client stream
//! (`/v3/watch`, `/v3/lease/keepalive`), read as the client sends them, so a client
//! can keep the request open and add cancel requests later.
//!
//! Guarantees: values are returned in order, each as soon as its last byte arrives;
//! the end of the body after whitespace is a clean end; a value cut off by the end
//! of the body is `unexpected EOF`; malformed JSON is reported in Go's words; a body
//! (unary) or a pending value (stream) larger than the limit is refused (the limit is
//! well above what a request etcd would accept can take as JSON).

use axum::body::{Body, BodyDataStream};
use serde::de::IgnoredAny;
use serde_json::value::RawValue;
use tokio_stream::StreamExt;
use tonic::Code;

use super::decode::{self, syntax_error, Decode, DecodeError};

fn too_large(limit: usize) -> DecodeError {
    DecodeError(format!("skiff: request body larger than {limit} bytes"))
}

/// Why a unary request is refused before it is served.
pub struct Refused {
    pub code: Code,
    pub message: String,
}

impl From<DecodeError> for Refused {
    fn from(e: DecodeError) -> Refused {
        Refused {
            code: Code::InvalidArgument,
            message: e.0,
        }
    }
}

/// Reads a unary call's request: the first JSON value of the body (anything after it
/// is ignored, as Go's decoder does); an empty body is the default request.
pub async fn read_one<T: Decode>(body: Body, limit: usize) -> Result<T, Refused> {
    let bytes = axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| Refused {
            code: Code::ResourceExhausted,
            message: too_large(limit).0,
        })?;
    let text = String::from_utf8_lossy(&bytes);
    let mut values = serde_json::Deserializer::from_str(&text).into_iter::<&RawValue>();
    match values.next() {
        None => Ok(T::default()),
        Some(Err(e)) => Err(syntax_error(&text, &e).into()),
        Some(Ok(raw)) => Ok(decode::message(raw.get())?),
    }
}

/// The JSON values of a streaming request body, as they arrive.
pub struct JsonValues {
    body: BodyDataStream,
    buf: Vec<u8>,
    ended: bool,
    limit: usize,
}

impl JsonValues {
    pub fn new(body: Body, limit: usize) -> JsonValues {
        JsonValues {
            body: body.into_data_stream(),
            buf: Vec::new(),
            ended: false,
            limit,
        }
    }

    /// The next value's text; `None` at the end of the body. Cancel-safe: bytes read
    /// stay buffered for the next call.
    pub async fn next(&mut self) -> Result<Option<String>, DecodeError> {
        loop {
            let start = self
                .buf
                .iter()
                .position(|b| !b.is_ascii_whitespace())
                .unwrap_or(self.buf.len());
            self.buf.drain(..start);
            if !self.buf.is_empty() {
                let mut values =
                    serde_json::Deserializer::from_slice(&self.buf).into_iter::<IgnoredAny>();
                match values.next() {
                    Some(Ok(_)) => {
                        let end = values.byte_offset();
                        let text = String::from_utf8_lossy(&self.buf[..end]).into_owned();
                        self.buf.drain(..end);
                        return Ok(Some(text));
                    }
                    Some(Err(e)) if e.is_eof() && !self.ended => {}
                    Some(Err(e)) => {
                        return Err(syntax_error(&String::from_utf8_lossy(&self.buf), &e))
                    }
                    None => {}
                }
            }
            if self.ended {
                return Ok(None);
            }
            if self.buf.len() > self.limit {
                return Err(too_large(self.limit));
            }
            match self.body.next().await {
                Some(Ok(chunk)) => self.buf.extend_from_slice(&chunk),
                Some(Err(_)) | None => self.ended = true,
            }
        }
    }

    /// The next value, decoded as `T`.
    pub async fn next_message<T: Decode>(&mut self) -> Result<Option<T>, DecodeError> {
        match self.next().await? {
            None => Ok(None),
            Some(text) => decode::message(&text).map(Some),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A body delivered in the given pieces.
    fn body(pieces: &[&'static str]) -> Body {
        let chunks: Vec<Result<&'static str, std::io::Error>> =
            pieces.iter().map(|p| Ok(*p)).collect();
        Body::from_stream(tokio_stream::iter(chunks))
    }

    async fn all(pieces: &[&'static str]) -> (Vec<String>, Option<String>) {
        let mut values = JsonValues::new(body(pieces), 1 << 20);
        let mut out = Vec::new();
        loop {
            match values.next().await {
                Ok(Some(v)) => out.push(v),
                Ok(None) => return (out, None),
                Err(e) => return (out, Some(e.0)),
            }
        }
    }

    #[tokio::test]
    async fn values_split_across_chunks_come_whole_and_in_order() {
        let (vals, err) = all(&["{\"ID\"", ":1}{\"ID\":", "2}  \n", " {\"a\":[1,", "2]}\n"]).await;
        assert_eq!(vals, vec![r#"{"ID":1}"#, r#"{"ID":2}"#, r#"{"a":[1,2]}"#]);
        assert_eq!(err, None);
    }

    #[tokio::test]
    async fn a_cut_off_value_is_unexpected_eof_and_garbage_is_gos_error() {
        let (vals, err) = all(&["{\"ID\":1} {\"ID\""]).await;
        assert_eq!(vals, vec![r#"{"ID":1}"#]);
        assert_eq!(err.as_deref(), Some("unexpected EOF"));
        let (vals, err) = all(&["{\"ID\":1}", "xx"]).await;
        assert_eq!(vals, vec![r#"{"ID":1}"#]);
        assert_eq!(
            err.as_deref(),
            Some("invalid character 'x' looking for beginning of value")
        );
        let (vals, err) = all(&["", "  \n"]).await;
        assert!(vals.is_empty() && err.is_none());
    }

    #[tokio::test]
    async fn a_unary_body_is_its_first_value() {
        #[derive(Default)]
        struct Id(i64);
        impl Decode for Id {
            fn decode(f: &mut decode::Fields<'_>) -> Result<Id, DecodeError> {
                Ok(Id(f.i64("ID")?))
            }
        }
        let id: Id = read_one(body(&["{\"ID\":\"7\"} trailing"]), 100)
            .await
            .ok()
            .unwrap();
        assert_eq!(id.0, 7);
        let empty: Id = read_one(body(&[""]), 100).await.ok().unwrap();
        assert_eq!(empty.0, 0);
        let refused = read_one::<Id>(body(&["{\"ID\":1}", "                    "]), 10)
            .await
            .err()
            .unwrap();
        assert_eq!(refused.code, Code::ResourceExhausted);
    }
}
