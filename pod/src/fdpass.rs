//! One file descriptor across a Unix socket (SCM_RIGHTS), with a short message beside it: how
//! a pty master comes from the runtime (exec's and a `tty: true` container's console socket)
//! and how the shim lends a container's stdin or terminal to the agent for `kubectl attach`.

use nix::sys::socket::{ControlMessage, ControlMessageOwned, MsgFlags, recvmsg, sendmsg};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;

/// Sends `payload` (at least one byte) and, when given, `fd` in the same message.
pub fn send_fd(stream: &UnixStream, payload: &[u8], fd: Option<BorrowedFd<'_>>) -> nix::Result<()> {
    let iov = [std::io::IoSlice::new(payload)];
    let fds = fd.map(|f| [f.as_raw_fd()]);
    let cmsgs: Vec<ControlMessage<'_>> = fds
        .as_ref()
        .map(|f| ControlMessage::ScmRights(f))
        .into_iter()
        .collect();
    loop {
        match sendmsg::<()>(
            stream.as_raw_fd(),
            &iov,
            &cmsgs,
            MsgFlags::MSG_NOSIGNAL,
            None,
        ) {
            Err(nix::Error::EINTR) => continue,
            r => return r.map(|_| ()),
        }
    }
}

/// Receives one message: its bytes (up to 256) and the fd it carried, if any. An empty
/// payload means the other end closed.
pub fn receive_fd(stream: &UnixStream) -> nix::Result<(Vec<u8>, Option<OwnedFd>)> {
    let mut buf = [0u8; 256];
    let mut iov = [std::io::IoSliceMut::new(&mut buf)];
    let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
    let (n, fd) = loop {
        match recvmsg::<()>(
            stream.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Err(nix::Error::EINTR) => continue,
            Err(e) => return Err(e),
            Ok(msg) => {
                let mut fd = None;
                for c in msg.cmsgs()? {
                    if let ControlMessageOwned::ScmRights(fds) = c {
                        for (i, &raw) in fds.iter().enumerate() {
                            // SAFETY: SCM_RIGHTS just installed these fds in our table;
                            // nothing else owns them. Extra ones are closed at once.
                            let owned = unsafe { OwnedFd::from_raw_fd(raw) };
                            if i == 0 && fd.is_none() {
                                fd = Some(owned);
                            }
                        }
                    }
                }
                break (msg.bytes, fd);
            }
        }
    };
    Ok((buf[..n].to_vec(), fd))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn a_message_with_and_without_a_descriptor() {
        let (a, b) = UnixStream::pair().unwrap();
        let (r, w) = nix::unistd::pipe().unwrap();
        send_fd(&a, b"S", Some(w.as_fd())).unwrap();
        drop(w);
        let (msg, got) = receive_fd(&b).unwrap();
        assert_eq!(msg, b"S");
        // The received fd is the pipe's write end: what goes in comes out of `r`.
        let mut got = std::fs::File::from(got.unwrap());
        std::io::Write::write_all(&mut got, b"hi").unwrap();
        drop(got);
        let mut out = String::new();
        std::io::Read::read_to_string(&mut std::fs::File::from(r), &mut out).unwrap();
        assert_eq!(out, "hi");
        send_fd(&a, b"N", None).unwrap();
        let (msg, got) = receive_fd(&b).unwrap();
        assert_eq!(msg, b"N");
        assert!(got.is_none());
        drop(a);
        assert_eq!(receive_fd(&b).unwrap().0, b"");
    }
}
