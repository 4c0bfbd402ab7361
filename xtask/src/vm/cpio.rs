//! A writer for the cpio "newc" format, which the kernel unpacks as the initramfs.
//!
//! Each entry is a 110-byte ASCII header (magic `070701` and thirteen 8-digit hex fields), the
//! NUL-terminated name padded to 4 bytes, then the data padded to 4 bytes. The archive ends with
//! an entry named `TRAILER!!!`.

use std::io::{self, Write};

const S_IFDIR: u32 = 0o040_000;
const S_IFREG: u32 = 0o100_000;
const S_IFCHR: u32 = 0o020_000;
const S_IFLNK: u32 = 0o120_000;

/// Writes a newc archive entry by entry; parents must be added before their children.
pub struct CpioWriter<W: Write> {
    out: W,
    next_inode: u32,
    offset: u64,
}

struct Header<'a> {
    name: &'a str,
    mode: u32,
    nlink: u32,
    size: u32,
    rdev_major: u32,
    rdev_minor: u32,
}

impl<W: Write> CpioWriter<W> {
    pub fn new(out: W) -> Self {
        CpioWriter {
            out,
            next_inode: 1,
            offset: 0,
        }
    }

    /// A directory; `path` is relative to the archive root, e.g. `bin`.
    pub fn dir(&mut self, path: &str, perm: u32) -> io::Result<()> {
        self.entry(
            Header {
                name: path,
                mode: S_IFDIR | perm,
                nlink: 2,
                size: 0,
                rdev_major: 0,
                rdev_minor: 0,
            },
            &[],
        )
    }

    /// A regular file with these contents.
    pub fn file(&mut self, path: &str, perm: u32, data: &[u8]) -> io::Result<()> {
        let size = u32::try_from(data.len()).map_err(|_| {
            io::Error::new(io::ErrorKind::InvalidInput, format!("{path} is over 4 GiB"))
        })?;
        self.entry(
            Header {
                name: path,
                mode: S_IFREG | perm,
                nlink: 1,
                size,
                rdev_major: 0,
                rdev_minor: 0,
            },
            data,
        )
    }

    /// A symbolic link pointing at `target`.
    pub fn symlink(&mut self, path: &str, target: &str) -> io::Result<()> {
        let data = target.as_bytes();
        let size = u32::try_from(data.len()).unwrap_or(u32::MAX);
        self.entry(
            Header {
                name: path,
                mode: S_IFLNK | 0o777,
                nlink: 1,
                size,
                rdev_major: 0,
                rdev_minor: 0,
            },
            data,
        )
    }

    /// A character device node, e.g. `dev/console` (5, 1).
    pub fn char_device(&mut self, path: &str, perm: u32, major: u32, minor: u32) -> io::Result<()> {
        self.entry(
            Header {
                name: path,
                mode: S_IFCHR | perm,
                nlink: 1,
                size: 0,
                rdev_major: major,
                rdev_minor: minor,
            },
            &[],
        )
    }

    /// Writes the trailer and returns the underlying writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.entry(
            Header {
                name: "TRAILER!!!",
                mode: 0,
                nlink: 1,
                size: 0,
                rdev_major: 0,
                rdev_minor: 0,
            },
            &[],
        )?;
        Ok(self.out)
    }

    fn entry(&mut self, header: Header<'_>, data: &[u8]) -> io::Result<()> {
        let name_size = header.name.len() + 1;
        let inode = if header.name == "TRAILER!!!" {
            0
        } else {
            self.next_inode
        };
        self.next_inode += 1;
        let fields = [
            inode,
            header.mode,
            0, // uid
            0, // gid
            header.nlink,
            0, // mtime: fixed, so the archive is reproducible
            header.size,
            0, // dev major
            0, // dev minor
            header.rdev_major,
            header.rdev_minor,
            u32::try_from(name_size).unwrap_or(u32::MAX),
            0, // check
        ];
        let mut head = String::with_capacity(110);
        head.push_str("070701");
        for field in fields {
            head.push_str(&format!("{field:08x}"));
        }
        self.write(head.as_bytes())?;
        self.write(header.name.as_bytes())?;
        self.write(&[0])?;
        self.pad()?;
        self.write(data)?;
        self.pad()
    }

    fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.out.write_all(bytes)?;
        self.offset += bytes.len() as u64;
        Ok(())
    }

    fn pad(&mut self) -> io::Result<()> {
        let padding = (4 - (self.offset % 4) as usize) % 4;
        self.write(&[0u8; 3][..padding])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex_field(archive: &[u8], entry_start: usize, index: usize) -> u32 {
        let start = entry_start + 6 + index * 8;
        let text = std::str::from_utf8(&archive[start..start + 8]).unwrap();
        u32::from_str_radix(text, 16).unwrap()
    }

    #[test]
    fn entries_are_aligned_and_well_formed() {
        let mut writer = CpioWriter::new(Vec::new());
        writer.dir("bin", 0o755).unwrap();
        writer.file("bin/hello", 0o755, b"hello!").unwrap();
        writer.char_device("console", 0o600, 5, 1).unwrap();
        let archive = writer.finish().unwrap();

        assert_eq!(&archive[..6], b"070701");
        assert_eq!(archive.len() % 4, 0);
        // dir "bin": header 110 + "bin\0" = 114 -> padded to 116
        let file_entry = 116;
        assert_eq!(&archive[file_entry..file_entry + 6], b"070701");
        assert_eq!(hex_field(&archive, file_entry, 1), S_IFREG | 0o755);
        assert_eq!(hex_field(&archive, file_entry, 6), 6);
        // name "bin/hello\0" is 10 bytes: 110 + 10 = 120, aligned; data 6 -> padded to 8
        assert_eq!(&archive[file_entry + 120..file_entry + 126], b"hello!");
        let device_entry = file_entry + 128;
        assert_eq!(hex_field(&archive, device_entry, 1), S_IFCHR | 0o600);
        assert_eq!(hex_field(&archive, device_entry, 9), 5);
        assert_eq!(hex_field(&archive, device_entry, 10), 1);
        let tail = String::from_utf8_lossy(&archive[archive.len() - 16..]);
        assert!(tail.contains("TRAILER!!!"), "{tail}");
    }

    #[test]
    fn round_trips_through_the_cpio_tool_format_rules() {
        // Every header starts on a 4-byte boundary: walk the archive by its own sizes.
        let mut writer = CpioWriter::new(Vec::new());
        for i in 0..7 {
            writer
                .file(&format!("f{i}"), 0o644, &vec![b'x'; i])
                .unwrap();
        }
        writer.symlink("link", "f1").unwrap();
        let archive = writer.finish().unwrap();
        let mut at = 0;
        let mut names = Vec::new();
        loop {
            assert_eq!(at % 4, 0);
            assert_eq!(&archive[at..at + 6], b"070701", "entry at {at}");
            let size = hex_field(&archive, at, 6) as usize;
            let name_size = hex_field(&archive, at, 11) as usize;
            let name =
                String::from_utf8(archive[at + 110..at + 110 + name_size - 1].to_vec()).unwrap();
            let data_start = (at + 110 + name_size).div_ceil(4) * 4;
            at = (data_start + size).div_ceil(4) * 4;
            if name == "TRAILER!!!" {
                break;
            }
            names.push(name);
        }
        assert_eq!(at, archive.len());
        assert_eq!(names.len(), 8);
    }
}
