//! The framing of the API server ↔ agent hop of `pods/exec` and `pods/attach`, spoken on the
//! agent connection after it switched protocols (`Upgrade: podd-stream`): each frame is one
//! channel byte, the payload's length (u32, big-endian) and the payload. The channels are
//! the Kubernetes ones: 0 stdin, 1 stdout, 2 stderr, 3 the end (`{"exitCode":N}` or
//! `{"error":"..."}`, JSON), 4 a terminal resize (`{"Width":W,"Height":H}`), 255 "this
//! stream is closed" (payload: the channel, e.g. `[0]` for stdin's end).

use tokio::io::{AsyncRead, AsyncReadExt};

pub const STDIN: u8 = 0;
pub const STDOUT: u8 = 1;
pub const STDERR: u8 = 2;
pub const STATUS: u8 = 3;
pub const RESIZE: u8 = 4;
pub const CLOSE: u8 = 255;

/// The protocol name in the agent hop's `Upgrade` header.
pub const UPGRADE_PROTOCOL: &str = "podd-stream";

/// The largest payload of one frame; larger writes are split.
pub const MAX_FRAME: usize = 1 << 20;

/// One frame, encoded.
pub fn encode(channel: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(5 + payload.len());
    out.push(channel);
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// Reads the next frame: None when the stream ends between frames.
pub async fn read<R: AsyncRead + Unpin>(r: &mut R) -> std::io::Result<Option<(u8, Vec<u8>)>> {
    let mut head = [0u8; 5];
    match r.read_exact(&mut head[..1]).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    r.read_exact(&mut head[1..]).await?;
    let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
    if len > MAX_FRAME {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("a stream frame of {len} bytes is larger than {MAX_FRAME}"),
        ));
    }
    let mut payload = vec![0u8; len];
    r.read_exact(&mut payload).await?;
    Ok(Some((head[0], payload)))
}

/// The end-of-command frame's payload.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct End {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A terminal size, as kubectl sends it on the resize channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TermSize {
    #[serde(rename = "Width")]
    pub width: u16,
    #[serde(rename = "Height")]
    pub height: u16,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_round_trip_and_end_cleanly() {
        let mut wire = encode(STDOUT, b"hello");
        wire.extend(encode(CLOSE, &[STDIN]));
        wire.extend(encode(STATUS, br#"{"exitCode":3}"#));
        let mut r = &wire[..];
        assert_eq!(
            read(&mut r).await.unwrap(),
            Some((STDOUT, b"hello".to_vec()))
        );
        assert_eq!(read(&mut r).await.unwrap(), Some((CLOSE, vec![STDIN])));
        let (ch, p) = read(&mut r).await.unwrap().unwrap();
        assert_eq!(ch, STATUS);
        let end: End = serde_json::from_slice(&p).unwrap();
        assert_eq!(end.exit_code, Some(3));
        assert_eq!(read(&mut r).await.unwrap(), None);
    }

    #[tokio::test]
    async fn a_cut_frame_or_an_oversized_one_is_an_error() {
        let wire = encode(STDOUT, b"hello");
        let mut r = &wire[..4];
        assert!(read(&mut r).await.is_err());
        let mut big = vec![STDOUT];
        big.extend_from_slice(&(MAX_FRAME as u32 + 1).to_be_bytes());
        let mut r = &big[..];
        assert!(read(&mut r).await.is_err());
    }

    #[test]
    fn resize_is_kubectls_json() {
        let s: TermSize = serde_json::from_str(r#"{"Width":80,"Height":24}"#).unwrap();
        assert_eq!(
            s,
            TermSize {
                width: 80,
                height: 24
            }
        );
    }
}
