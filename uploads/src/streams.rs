//! Byte streams cut into consecutive parts: a tus request body cut at chunk boundaries
//! (`tus::append`), a final upload's partials cut into its chunks (`assembler`).

use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use storage::ByteStream;
use tokio::sync::Mutex;

/// One request body handed out in consecutive parts, each a stream of its own.
#[derive(Clone)]
pub(crate) struct Splitter {
    inner: Arc<Mutex<(ByteStream, Option<Bytes>)>>,
}

impl Splitter {
    pub(crate) fn new(body: ByteStream) -> Self {
        Self {
            inner: Arc::new(Mutex::new((body, None))),
        }
    }

    /// The next `n` bytes of the body (fewer if it ends first). Parts must be read in order.
    pub(crate) fn take(&self, n: u64) -> ByteStream {
        let inner = Arc::clone(&self.inner);
        Box::pin(futures::stream::unfold(
            (inner, n),
            |(inner, left)| async move {
                if left == 0 {
                    return None;
                }
                let mut guard = inner.lock().await;
                let (stream, held) = &mut *guard;
                let mut bytes = match held.take() {
                    Some(b) => b,
                    None => match stream.next().await? {
                        Ok(b) => b,
                        Err(e) => {
                            drop(guard);
                            return Some((Err(e), (inner, 0)));
                        }
                    },
                };
                if bytes.len() as u64 > left {
                    *held = Some(bytes.split_off(left as usize));
                }
                let taken = bytes.len() as u64;
                drop(guard);
                Some((Ok(bytes), (inner, left - taken)))
            },
        ))
    }
}

/// Streams for unit tests.
#[cfg(test)]
pub(crate) mod testing {
    use bytes::Bytes;
    use futures::TryStreamExt;
    use storage::ByteStream;

    /// A stream of these frames.
    pub(crate) fn stream_of(frames: &[&[u8]]) -> ByteStream {
        let frames: Vec<std::io::Result<Bytes>> = frames
            .iter()
            .map(|f| Ok(Bytes::copy_from_slice(f)))
            .collect();
        Box::pin(futures::stream::iter(frames))
    }

    /// All of a stream's bytes.
    pub(crate) async fn collect(s: ByteStream) -> Vec<u8> {
        s.try_fold(Vec::new(), |mut acc, b| async move {
            acc.extend_from_slice(&b);
            Ok(acc)
        })
        .await
        .unwrap()
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{collect, stream_of};
    use super::*;

    #[tokio::test]
    async fn parts_of_a_body_are_consecutive_and_exact() {
        let body = Splitter::new(stream_of(&[b"abc", b"defgh", b"", b"ij"]));
        assert_eq!(collect(body.take(2)).await, b"ab");
        assert_eq!(collect(body.take(4)).await, b"cdef");
        assert_eq!(collect(body.take(0)).await, b"");
        assert_eq!(collect(body.take(10)).await, b"ghij");
        assert_eq!(collect(body.take(3)).await, b"");
    }
}
