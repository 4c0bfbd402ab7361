//! The setup channel between the runtime and the container's setup processes: a SOCK_SEQPACKET
//! socketpair with one-byte tags.

use std::os::fd::{AsRawFd, OwnedFd};

use nix::sys::socket::{MsgFlags, recv, send};

use crate::error::{Error, Result, sys_err};

/// A message on the setup channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Msg {
    /// Stage 1 -> runtime: the host pid of the container's init.
    Pid(i32),
    /// Runtime -> init: the id maps are written, go on.
    Go,
    /// Init -> runtime: run prestart/createRuntime hooks now.
    HooksRequest,
    /// Runtime -> init: hooks done; carries init's host pid for in-container hooks.
    HooksDone(i32),
    /// Init -> runtime: set up, waiting for start.
    Ready,
    /// Any setup process -> runtime: setup failed.
    Error(String),
}

impl Msg {
    fn encode(&self) -> Vec<u8> {
        match self {
            Msg::Pid(p) => [&[b'P'][..], &p.to_le_bytes()].concat(),
            Msg::Go => vec![b'G'],
            Msg::HooksRequest => vec![b'H'],
            Msg::HooksDone(p) => [&[b'D'][..], &p.to_le_bytes()].concat(),
            Msg::Ready => vec![b'R'],
            Msg::Error(e) => [&[b'E'][..], e.as_bytes()].concat(),
        }
    }

    fn decode(b: &[u8]) -> Result<Msg> {
        let int = |b: &[u8]| -> Result<i32> {
            b.get(1..5)
                .and_then(|s| s.try_into().ok())
                .map(i32::from_le_bytes)
                .ok_or_else(|| Error::Init("short setup message".into()))
        };
        Ok(match b.first() {
            Some(b'P') => Msg::Pid(int(b)?),
            Some(b'G') => Msg::Go,
            Some(b'H') => Msg::HooksRequest,
            Some(b'D') => Msg::HooksDone(int(b)?),
            Some(b'R') => Msg::Ready,
            Some(b'E') => Msg::Error(String::from_utf8_lossy(&b[1..]).into_owned()),
            _ => return Err(Error::Init(format!("unknown setup message {b:?}"))),
        })
    }
}

/// Send one message.
pub fn send_msg(fd: &OwnedFd, msg: &Msg) -> Result<()> {
    send(fd.as_raw_fd(), &msg.encode(), MsgFlags::MSG_NOSIGNAL)
        .map_err(sys_err("send setup message"))?;
    Ok(())
}

/// Receive one message; `None` when the other end closed.
pub fn recv_msg(fd: &OwnedFd) -> Result<Option<Msg>> {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match recv(fd.as_raw_fd(), &mut buf, MsgFlags::empty()) {
            Ok(0) => return Ok(None),
            Ok(n) => return Msg::decode(&buf[..n]).map(Some),
            Err(nix::Error::EINTR) => continue,
            Err(e) => return Err(sys_err("receive setup message")(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        for m in [
            Msg::Pid(42),
            Msg::Go,
            Msg::HooksRequest,
            Msg::HooksDone(7),
            Msg::Ready,
            Msg::Error("x y".into()),
        ] {
            assert_eq!(Msg::decode(&m.encode()).unwrap(), m);
        }
    }
}
