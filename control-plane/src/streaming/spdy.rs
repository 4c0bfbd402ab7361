//! Just enough SPDY/3.1 for `kubectl port-forward`: kubectl 1.32 tunnels a SPDY session over
//! a WebSocket (subprotocol `SPDY/3.1+portforward.k8s.io`), each WebSocket message carrying
//! raw SPDY bytes. This module parses and writes the frames; the session logic is in
//! [`super::portforward`].
//!
//! Frames (SPDY draft 3): a control frame is `1|version(15) type(16) flags(8) length(24)`
//! then its fields; a data frame is `0|stream-id(31) flags(8) length(24)` then the bytes.
//! Header blocks (SYN_STREAM, SYN_REPLY, HEADERS) are zlib-compressed with the protocol's
//! preset dictionary, one zlib stream per direction for the whole session, each block ending
//! with a sync flush.

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
use std::sync::OnceLock;

pub const VERSION: u16 = 3;
pub const FLAG_FIN: u8 = 0x01;

const SYN_STREAM: u16 = 1;
const SYN_REPLY: u16 = 2;
const RST_STREAM: u16 = 3;
const SETTINGS: u16 = 4;
const PING: u16 = 6;
const GOAWAY: u16 = 7;
const HEADERS: u16 = 8;
const WINDOW_UPDATE: u16 = 9;

/// RST_STREAM status: the stream was refused / cancelled / failed.
pub const RST_PROTOCOL_ERROR: u32 = 1;
pub const RST_CANCEL: u32 = 5;

/// The largest frame accepted (SPDY's length field allows 16 MiB; nobody here needs that).
pub const MAX_FRAME: usize = 1 << 20;

/// The largest decompressed header block accepted.
const MAX_HEADER_BLOCK: usize = 64 << 10;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SpdyError {
    #[error("SPDY frame of {0} bytes is larger than {MAX_FRAME}")]
    TooLarge(usize),
    #[error("SPDY version {0} is not spoken here (only 3)")]
    Version(u16),
    #[error("malformed SPDY {what}: {why}")]
    Malformed { what: &'static str, why: String },
}

fn malformed(what: &'static str, why: impl Into<String>) -> SpdyError {
    SpdyError::Malformed {
        what,
        why: why.into(),
    }
}

/// Header names and values; names are lowercase on the wire.
pub type Headers = Vec<(String, String)>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    SynStream {
        stream: u32,
        headers: Headers,
        fin: bool,
    },
    SynReply {
        stream: u32,
        headers: Headers,
        fin: bool,
    },
    RstStream {
        stream: u32,
        status: u32,
    },
    Settings,
    Ping(u32),
    GoAway {
        last_stream: u32,
        status: u32,
    },
    Headers {
        stream: u32,
        headers: Headers,
    },
    WindowUpdate {
        stream: u32,
        delta: u32,
    },
    Data {
        stream: u32,
        fin: bool,
        data: Vec<u8>,
    },
    /// A control frame type this implementation ignores.
    Other(u16),
}

/// SPDY/3's zlib dictionary for header blocks: length-prefixed common header words, then a
/// run of common values, exactly as the protocol defines it (it must match byte for byte).
pub fn dictionary() -> &'static [u8] {
    static DICT: OnceLock<Vec<u8>> = OnceLock::new();
    DICT.get_or_init(|| {
        const WORDS: &[&str] = &[
            "options",
            "head",
            "post",
            "put",
            "delete",
            "trace",
            "accept",
            "accept-charset",
            "accept-encoding",
            "accept-language",
            "accept-ranges",
            "age",
            "allow",
            "authorization",
            "cache-control",
            "connection",
            "content-base",
            "content-encoding",
            "content-language",
            "content-length",
            "content-location",
            "content-md5",
            "content-range",
            "content-type",
            "date",
            "etag",
            "expect",
            "expires",
            "from",
            "host",
            "if-match",
            "if-modified-since",
            "if-none-match",
            "if-range",
            "if-unmodified-since",
            "last-modified",
            "location",
            "max-forwards",
            "pragma",
            "proxy-authenticate",
            "proxy-authorization",
            "range",
            "referer",
            "retry-after",
            "server",
            "te",
            "trailer",
            "transfer-encoding",
            "upgrade",
            "user-agent",
            "vary",
            "via",
            "warning",
            "www-authenticate",
            "method",
            "get",
            "status",
            "200 OK",
            "version",
            "HTTP/1.1",
            "url",
            "public",
            "set-cookie",
            "keep-alive",
            "origin",
        ];
        const TAIL: &str = concat!(
            "100101201202205206300302303304305306307402405406407408409410411412413414415416417",
            "502504505203 Non-Authoritative Information204 No Content301 Moved Permanently",
            "400 Bad Request401 Unauthorized403 Forbidden404 Not Found500 Internal Server Error",
            "501 Not Implemented503 Service UnavailableJan Feb Mar Apr May Jun Jul Aug Sept Oct ",
            "Nov Dec 00:00:00 Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMTchunked,text/html,image/png,",
            "image/jpg,image/gif,application/xml,application/xhtml+xml,text/plain,text/javascript,",
            "publicprivatemax-age=gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0."
        );
        let mut d = Vec::with_capacity(1424);
        for w in WORDS {
            d.extend_from_slice(&(w.len() as u32).to_be_bytes());
            d.extend_from_slice(w.as_bytes());
        }
        d.extend_from_slice(TAIL.as_bytes());
        d
    })
}

/// One direction's frame reader and the other's writer, with their header (de)compressors.
pub struct Codec {
    inflate: Decompress,
    deflate: Compress,
    deflate_primed: bool,
    buf: Vec<u8>,
}

impl Default for Codec {
    fn default() -> Self {
        Codec::new()
    }
}

impl Codec {
    pub fn new() -> Codec {
        Codec {
            inflate: Decompress::new(true),
            deflate: Compress::new(Compression::default(), true),
            deflate_primed: false,
            buf: Vec::new(),
        }
    }

    /// Adds received bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next whole frame received, if there is one.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, SpdyError> {
        if self.buf.len() < 8 {
            return Ok(None);
        }
        let len = u32::from_be_bytes([0, self.buf[5], self.buf[6], self.buf[7]]) as usize;
        if len > MAX_FRAME {
            return Err(SpdyError::TooLarge(len));
        }
        if self.buf.len() < 8 + len {
            return Ok(None);
        }
        let frame: Vec<u8> = self.buf.drain(..8 + len).collect();
        let flags = frame[4];
        let body = &frame[8..];
        if frame[0] & 0x80 == 0 {
            let stream = u32::from_be_bytes([frame[0], frame[1], frame[2], frame[3]]) & 0x7fff_ffff;
            return Ok(Some(Frame::Data {
                stream,
                fin: flags & FLAG_FIN != 0,
                data: body.to_vec(),
            }));
        }
        let version = u16::from_be_bytes([frame[0], frame[1]]) & 0x7fff;
        if version != VERSION {
            return Err(SpdyError::Version(version));
        }
        let kind = u16::from_be_bytes([frame[2], frame[3]]);
        let u32_at = |what: &'static str, i: usize| -> Result<u32, SpdyError> {
            body.get(i..i + 4)
                .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
                .ok_or_else(|| malformed(what, format!("{} bytes are too short", body.len())))
        };
        let fin = flags & FLAG_FIN != 0;
        Ok(Some(match kind {
            SYN_STREAM => {
                let stream = u32_at("SYN_STREAM", 0)? & 0x7fff_ffff;
                if body.len() < 10 {
                    return Err(malformed("SYN_STREAM", "shorter than 10 bytes"));
                }
                let headers = self.read_headers(&body[10..])?;
                Frame::SynStream {
                    stream,
                    headers,
                    fin,
                }
            }
            SYN_REPLY => {
                let stream = u32_at("SYN_REPLY", 0)? & 0x7fff_ffff;
                let headers = self.read_headers(&body[4..])?;
                Frame::SynReply {
                    stream,
                    headers,
                    fin,
                }
            }
            HEADERS => {
                let stream = u32_at("HEADERS", 0)? & 0x7fff_ffff;
                let headers = self.read_headers(&body[4..])?;
                Frame::Headers { stream, headers }
            }
            RST_STREAM => Frame::RstStream {
                stream: u32_at("RST_STREAM", 0)? & 0x7fff_ffff,
                status: u32_at("RST_STREAM", 4)?,
            },
            SETTINGS => Frame::Settings,
            PING => Frame::Ping(u32_at("PING", 0)?),
            GOAWAY => Frame::GoAway {
                last_stream: u32_at("GOAWAY", 0)? & 0x7fff_ffff,
                status: u32_at("GOAWAY", 4).unwrap_or(0),
            },
            WINDOW_UPDATE => Frame::WindowUpdate {
                stream: u32_at("WINDOW_UPDATE", 0)? & 0x7fff_ffff,
                delta: u32_at("WINDOW_UPDATE", 4)? & 0x7fff_ffff,
            },
            other => Frame::Other(other),
        }))
    }

    /// Decompresses one header block (the session's zlib stream goes on) and parses it.
    fn read_headers(&mut self, block: &[u8]) -> Result<Headers, SpdyError> {
        let mut out = Vec::with_capacity(256);
        let mut input = block;
        loop {
            if out.len() == out.capacity() {
                if out.len() >= MAX_HEADER_BLOCK {
                    return Err(malformed("header block", "larger than 64 KiB"));
                }
                out.reserve(out.len().max(256));
            }
            let before = self.inflate.total_in();
            let r = self
                .inflate
                .decompress_vec(input, &mut out, FlushDecompress::Sync);
            let used = (self.inflate.total_in() - before) as usize;
            input = &input[used..];
            match r {
                Ok(Status::StreamEnd) => break,
                Ok(_) => {
                    if input.is_empty() && out.len() < out.capacity() {
                        break;
                    }
                }
                Err(e) if e.needs_dictionary().is_some() => {
                    self.inflate.set_dictionary(dictionary()).map_err(|e| {
                        malformed("header block", format!("setting the dictionary: {e}"))
                    })?;
                }
                Err(e) => return Err(malformed("header block", e.to_string())),
            }
        }
        parse_header_block(&out)
    }

    /// Encodes a frame to send (compressing its headers with this session's stream).
    pub fn encode(&mut self, frame: &Frame) -> Vec<u8> {
        let control = |kind: u16, flags: u8, body: Vec<u8>| {
            let mut out = Vec::with_capacity(8 + body.len());
            out.extend_from_slice(&(0x8000 | VERSION).to_be_bytes());
            out.extend_from_slice(&kind.to_be_bytes());
            out.push(flags);
            out.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
            out.extend(body);
            out
        };
        let fin_flag = |fin: bool| if fin { FLAG_FIN } else { 0 };
        match frame {
            Frame::Data { stream, fin, data } => {
                let mut out = Vec::with_capacity(8 + data.len());
                out.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
                out.push(fin_flag(*fin));
                out.extend_from_slice(&(data.len() as u32).to_be_bytes()[1..]);
                out.extend_from_slice(data);
                out
            }
            Frame::SynStream {
                stream,
                headers,
                fin,
            } => {
                let mut body = stream.to_be_bytes().to_vec();
                body.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
                body.extend(self.write_headers(headers));
                control(SYN_STREAM, fin_flag(*fin), body)
            }
            Frame::SynReply {
                stream,
                headers,
                fin,
            } => {
                let mut body = stream.to_be_bytes().to_vec();
                body.extend(self.write_headers(headers));
                control(SYN_REPLY, fin_flag(*fin), body)
            }
            Frame::Headers { stream, headers } => {
                let mut body = stream.to_be_bytes().to_vec();
                body.extend(self.write_headers(headers));
                control(HEADERS, 0, body)
            }
            Frame::RstStream { stream, status } => {
                let mut body = stream.to_be_bytes().to_vec();
                body.extend_from_slice(&status.to_be_bytes());
                control(RST_STREAM, 0, body)
            }
            Frame::Settings => control(SETTINGS, 0, 0u32.to_be_bytes().to_vec()),
            Frame::Ping(id) => control(PING, 0, id.to_be_bytes().to_vec()),
            Frame::GoAway {
                last_stream,
                status,
            } => {
                let mut body = last_stream.to_be_bytes().to_vec();
                body.extend_from_slice(&status.to_be_bytes());
                control(GOAWAY, 0, body)
            }
            Frame::WindowUpdate { stream, delta } => {
                let mut body = stream.to_be_bytes().to_vec();
                body.extend_from_slice(&delta.to_be_bytes());
                control(WINDOW_UPDATE, 0, body)
            }
            Frame::Other(kind) => control(*kind, 0, Vec::new()),
        }
    }

    fn write_headers(&mut self, headers: &Headers) -> Vec<u8> {
        if !self.deflate_primed {
            // The dictionary is set before the first byte of the stream (zlib writes its id
            // into the stream header, and the reader sets the same one).
            let _ = self.deflate.set_dictionary(dictionary());
            self.deflate_primed = true;
        }
        let mut plain = (headers.len() as u32).to_be_bytes().to_vec();
        for (k, v) in headers {
            for s in [k.to_ascii_lowercase().as_bytes(), v.as_bytes()] {
                plain.extend_from_slice(&(s.len() as u32).to_be_bytes());
                plain.extend_from_slice(s);
            }
        }
        let mut out = Vec::with_capacity(plain.len() + 64);
        let mut input = &plain[..];
        loop {
            if out.len() == out.capacity() {
                out.reserve(256);
            }
            let before = self.deflate.total_in();
            let _ = self
                .deflate
                .compress_vec(input, &mut out, FlushCompress::Sync);
            input = &input[(self.deflate.total_in() - before) as usize..];
            // Done when everything went in and the flush did not fill the output.
            if input.is_empty() && out.len() < out.capacity() {
                break;
            }
        }
        out
    }
}

fn parse_header_block(b: &[u8]) -> Result<Headers, SpdyError> {
    let count = b
        .get(..4)
        .map(|x| u32::from_be_bytes([x[0], x[1], x[2], x[3]]))
        .ok_or_else(|| malformed("header block", "no header count"))?;
    let mut i = 4;
    let mut next = |what: &str| -> Result<&[u8], SpdyError> {
        let len = b
            .get(i..i + 4)
            .map(|x| u32::from_be_bytes([x[0], x[1], x[2], x[3]]) as usize)
            .ok_or_else(|| malformed("header block", format!("cut in a {what} length")))?;
        let s = b
            .get(i + 4..i + 4 + len)
            .ok_or_else(|| malformed("header block", format!("cut in a {what}")))?;
        i += 4 + len;
        Ok(s)
    };
    let mut out = Vec::new();
    for _ in 0..count {
        let name = String::from_utf8_lossy(next("name")?).into_owned();
        let value = String::from_utf8_lossy(next("value")?).into_owned();
        // Several values of one name are NUL-separated.
        for v in value.split('\0') {
            out.push((name.clone(), v.to_string()));
        }
    }
    Ok(out)
}

/// The value of header `name` (case-insensitive).
pub fn header<'a>(headers: &'a Headers, name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dictionary_is_spdy3s() {
        let d = dictionary();
        assert_eq!(d.len(), 1423);
        assert_eq!(&d[..11], b"\0\0\0\x07options");
        assert!(d.ends_with(b"enq=0."));
        // zlib puts the dictionary's Adler-32 in the stream header; kubectl checks it.
        let mut c = Compress::new(Compression::default(), true);
        assert_eq!(c.set_dictionary(d).unwrap(), adler32(d));
    }

    fn adler32(d: &[u8]) -> u32 {
        let (mut a, mut b) = (1u32, 0u32);
        for &x in d {
            a = (a + x as u32) % 65521;
            b = (b + a) % 65521;
        }
        (b << 16) | a
    }

    fn hdrs(pairs: &[(&str, &str)]) -> Headers {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn frames_round_trip_through_two_codecs() {
        // `client` writes what `server` reads, across several header blocks of one stream.
        let (mut client, mut server) = (Codec::new(), Codec::new());
        let frames = vec![
            Frame::SynStream {
                stream: 1,
                headers: hdrs(&[
                    ("streamtype", "error"),
                    ("port", "8080"),
                    ("requestid", "0"),
                ]),
                fin: false,
            },
            Frame::SynStream {
                stream: 3,
                headers: hdrs(&[("streamtype", "data"), ("port", "8080"), ("requestid", "0")]),
                fin: false,
            },
            Frame::Data {
                stream: 3,
                fin: true,
                data: b"GET / HTTP/1.0\r\n\r\n".to_vec(),
            },
            Frame::Ping(7),
            Frame::RstStream {
                stream: 3,
                status: RST_CANCEL,
            },
            Frame::SynReply {
                stream: 5,
                headers: Vec::new(),
                fin: false,
            },
            Frame::GoAway {
                last_stream: 3,
                status: 0,
            },
            Frame::WindowUpdate {
                stream: 1,
                delta: 100,
            },
        ];
        let mut wire = Vec::new();
        for f in &frames {
            wire.extend(client.encode(f));
        }
        // Delivered in odd pieces, as WebSocket messages may cut them.
        let mut got = Vec::new();
        for piece in wire.chunks(7) {
            server.push(piece);
            while let Some(f) = server.next_frame().unwrap() {
                got.push(f);
            }
        }
        assert_eq!(got, frames);
    }

    /// A SYN_STREAM exactly as kubectl 1.32 sent it (its first frame of a port-forward).
    const KUBECTL_SYN_STREAM: &str = "800300010000003e000000010000000000 0078f9e3c6a7c202253a703a2b294a4dcc851625aca9a08086\
        14cb45e01c60616061c0c0c0c0590489c64c50f26634 00000000ffff";

    fn unhex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn kubectls_syn_stream_decodes() {
        let mut c = Codec::new();
        c.push(&unhex(KUBECTL_SYN_STREAM));
        let f = c.next_frame().unwrap().unwrap();
        assert_eq!(
            f,
            Frame::SynStream {
                stream: 1,
                headers: hdrs(&[
                    ("streamtype", "error"),
                    ("port", "8080"),
                    ("requestid", "0")
                ]),
                fin: false
            }
        );
        // Our answer's header block is a zlib stream on SPDY's dictionary too (checked
        // against kubectl by the streaming kubectl test; here: it starts with FDICT and the
        // dictionary's id).
        let reply = c.encode(&Frame::SynReply {
            stream: 1,
            headers: Vec::new(),
            fin: false,
        });
        assert_eq!(&reply[..4], &[0x80, 3, 0, 2]);
        assert_eq!(reply[12] & 0x0f, 8, "deflate");
        assert_ne!(reply[13] & 0x20, 0, "FDICT");
        assert_eq!(&reply[14..18], &adler32(dictionary()).to_be_bytes());
    }

    #[test]
    fn a_hand_made_data_frame_parses() {
        let mut c = Codec::new();
        c.push(&[0, 0, 0, 5, 1, 0, 0, 2, b'h', b'i']);
        assert_eq!(
            c.next_frame().unwrap(),
            Some(Frame::Data {
                stream: 5,
                fin: true,
                data: b"hi".to_vec()
            })
        );
        assert_eq!(c.next_frame().unwrap(), None);
    }

    #[test]
    fn bad_input_is_refused() {
        let mut c = Codec::new();
        c.push(&[0x80, 2, 0, 6, 0, 0, 0, 4, 0, 0, 0, 1]);
        assert_eq!(c.next_frame(), Err(SpdyError::Version(2)));
        let mut c = Codec::new();
        c.push(&[0, 0, 0, 1, 0, 0x7f, 0, 0]);
        assert!(matches!(c.next_frame(), Err(SpdyError::TooLarge(_))));
        let mut c = Codec::new();
        // A SYN_STREAM whose header block is not zlib.
        c.push(&[
            0x80, 3, 0, 1, 0, 0, 0, 14, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4,
        ]);
        assert!(matches!(c.next_frame(), Err(SpdyError::Malformed { .. })));
    }

    #[test]
    fn header_lookup_ignores_case_and_splits_nul_values() {
        let h = parse_header_block(
            &[
                &2u32.to_be_bytes()[..],
                &4u32.to_be_bytes(),
                b"port",
                &2u32.to_be_bytes(),
                b"80",
                &1u32.to_be_bytes(),
                b"a",
                &3u32.to_be_bytes(),
                b"x\0y",
            ]
            .concat(),
        )
        .unwrap();
        assert_eq!(header(&h, "Port"), Some("80"));
        assert_eq!(h.len(), 3);
        assert!(parse_header_block(&[0, 0, 0, 1, 0, 0]).is_err());
    }
}
