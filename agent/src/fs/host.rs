//! A directory of this machine (a read-only kernel mount of a guest volume) as a [`Tree`], so
//! that `Rooted<HostTree>` is the [`super::RootFs`] over a kernel mount.
//!
//! Nodes are paths relative to the root. Every lookup is an `lstat` of one name in a directory
//! that [`Rooted`] has already resolved to a real directory, and files are opened with
//! `O_NOFOLLOW`: the host never follows a guest's symlink, so an absolute link such as
//! `/etc/os-release -> /usr/lib/os-release` is resolved inside the guest by [`Rooted`], exactly as
//! over the native parsers, and never reaches the scanner's own files.
//!
//! What it does not do: guard against a tree that changes while read (mounts are read-only), or
//! find names that are not valid UTF-8 by lookup (listing shows them lossily, like the native
//! parsers).

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::OFlag;

use super::{DirEntry, FileType, FsError, Metadata, Rooted, Tree};

/// A directory tree on this machine, read without following symlinks.
#[derive(Debug, Clone)]
pub struct HostTree {
    root: PathBuf,
}

impl HostTree {
    /// The tree under `root` (typically a mount point).
    pub fn new(root: impl Into<PathBuf>) -> HostTree {
        HostTree { root: root.into() }
    }

    /// The directory the tree starts at.
    pub fn root_dir(&self) -> &Path {
        &self.root
    }

    fn full(&self, node: &Path) -> PathBuf {
        self.root.join(node)
    }
}

/// [`HostTree`] with in-root path resolution: the `RootFs` over a kernel mount.
pub fn open(root: impl Into<PathBuf>) -> Rooted<HostTree> {
    Rooted(HostTree::new(root))
}

/// Map an I/O error on `path` to the [`FsError`] a parser would give.
fn map_err(e: &io::Error, path: &str) -> FsError {
    match e.kind() {
        io::ErrorKind::NotFound => FsError::NotFound(path.to_owned()),
        io::ErrorKind::NotADirectory => FsError::NotADirectory(path.to_owned()),
        io::ErrorKind::IsADirectory => FsError::IsADirectory(path.to_owned()),
        _ if e.raw_os_error() == Some(nix::errno::Errno::ELOOP as i32) => {
            FsError::SymlinkLoop(path.to_owned())
        }
        _ => FsError::Io(format!("{path}: {e}")),
    }
}

fn file_type(t: std::fs::FileType) -> FileType {
    if t.is_file() {
        FileType::File
    } else if t.is_dir() {
        FileType::Dir
    } else if t.is_symlink() {
        FileType::Symlink
    } else {
        FileType::Other
    }
}

impl Tree for HostTree {
    type Node = PathBuf;

    fn root(&self) -> PathBuf {
        PathBuf::new()
    }

    fn lookup(&self, dir: &PathBuf, name: &str, path: &str) -> Result<Option<PathBuf>, FsError> {
        let child = dir.join(name);
        match std::fs::symlink_metadata(self.full(&child)) {
            Ok(_) => Ok(Some(child)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(map_err(&e, path)),
        }
    }

    fn stat(&self, node: &PathBuf, path: &str) -> Result<Metadata, FsError> {
        let md = std::fs::symlink_metadata(self.full(node)).map_err(|e| map_err(&e, path))?;
        Ok(Metadata {
            file_type: file_type(md.file_type()),
            len: md.len(),
        })
    }

    fn read_link(&self, node: &PathBuf, path: &str) -> Result<Vec<u8>, FsError> {
        let target = std::fs::read_link(self.full(node)).map_err(|e| map_err(&e, path))?;
        Ok(target.as_os_str().as_bytes().to_vec())
    }

    fn read_at(
        &self,
        node: &PathBuf,
        offset: u64,
        buf: &mut [u8],
        path: &str,
    ) -> Result<usize, FsError> {
        let file: File = OpenOptions::new()
            .read(true)
            // No symlink (Rooted resolved them) and no blocking on a FIFO put in its place.
            .custom_flags((OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK).bits())
            .open(self.full(node))
            .map_err(|e| map_err(&e, path))?;
        let md = file.metadata().map_err(|e| map_err(&e, path))?;
        if !md.is_file() {
            return Err(FsError::NotFound(path.to_owned()));
        }
        let mut at = offset;
        super::fill(buf, |b| {
            let n = file.read_at(b, at).map_err(|e| map_err(&e, path))?;
            at = at.saturating_add(n as u64);
            Ok(n)
        })
    }

    fn list(&self, node: &PathBuf, path: &str) -> Result<Vec<DirEntry>, FsError> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(self.full(node)).map_err(|e| map_err(&e, path))? {
            let entry = entry.map_err(|e| map_err(&e, path))?;
            let file_type = entry
                .file_type()
                .map(file_type)
                .map_err(|e| map_err(&e, path))?;
            out.push(DirEntry {
                name: entry.file_name().to_string_lossy().into_owned(),
                file_type,
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::RootFs;
    use std::os::unix::fs::symlink;

    /// A temporary guest root next to a "host" file the guest must never reach.
    struct Fixture {
        base: PathBuf,
        fs: Rooted<HostTree>,
    }

    impl Drop for Fixture {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.base);
        }
    }

    fn fixture(tag: &str) -> Fixture {
        let base = std::env::temp_dir().join(format!("snapscan-host-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let root = base.join("root");
        let mk = |p: &str| std::fs::create_dir_all(root.join(p)).expect("mkdir");
        mk("etc");
        mk("usr/lib");
        mk("usr/bin");
        mk("loop");
        std::fs::write(base.join("host-secret"), "HOST").expect("write");
        std::fs::write(root.join("usr/lib/os-release"), "ID=debian\n").expect("write");
        std::fs::write(root.join("usr/bin/ls"), "ELF").expect("write");
        std::fs::write(root.join("host-secret"), "GUEST").expect("write");
        let ln = |target: &str, at: &str| symlink(target, root.join(at)).expect("symlink");
        ln("../usr/lib/os-release", "etc/os-release");
        ln("usr/bin", "bin");
        ln("/host-secret", "etc/abs");
        ln("../../../../host-secret", "etc/dotdot");
        // Absolute on the host, it would name the real base directory's file.
        let host_abs = base.join("host-secret");
        symlink(&host_abs, root.join("etc/host-abs")).expect("symlink");
        ln("b", "loop/a");
        ln("a", "loop/b");
        std::fs::write(root.join("big"), vec![b'x'; 100]).expect("write");
        Fixture {
            base,
            fs: open(root),
        }
    }

    #[test]
    fn resolution_inside_the_root() {
        let f = fixture("resolve");
        struct Case {
            name: &'static str,
            path: &'static str,
            want: Result<&'static str, &'static str>,
        }
        let cases = [
            Case {
                name: "relative symlink",
                path: "/etc/os-release",
                want: Ok("ID=debian\n"),
            },
            Case {
                name: "usr-merge",
                path: "/bin/ls",
                want: Ok("ELF"),
            },
            Case {
                name: "absolute symlink stays inside",
                path: "/etc/abs",
                want: Ok("GUEST"),
            },
            Case {
                name: "dotdot stops at root",
                path: "/etc/dotdot",
                want: Ok("GUEST"),
            },
            Case {
                name: "dotdot in the path",
                path: "/../../host-secret",
                want: Ok("GUEST"),
            },
            Case {
                name: "host absolute path is a guest path",
                path: "/etc/host-abs",
                want: Err("not_found"),
            },
            Case {
                name: "loop",
                path: "/loop/a",
                want: Err("symlink_loop"),
            },
            Case {
                name: "missing",
                path: "/nope",
                want: Err("not_found"),
            },
            Case {
                name: "file as directory",
                path: "/usr/bin/ls/x",
                want: Err("not_a_directory"),
            },
            Case {
                name: "directory as file",
                path: "/usr",
                want: Err("is_a_directory"),
            },
            Case {
                name: "too large",
                path: "/big",
                want: Err("too_large"),
            },
        ];
        for c in cases {
            let got =
                f.fs.read_file(c.path, 64)
                    .map(|b| String::from_utf8(b).expect("utf8"))
                    .map_err(|e| e.kind());
            assert_eq!(got.as_deref().map_err(|e| *e), c.want, "case {}", c.name);
        }
    }

    #[test]
    fn metadata_links_listing_and_prefix() {
        let f = fixture("meta");
        let fs = &f.fs;
        assert_eq!(
            fs.symlink_metadata("/bin").map(|m| m.file_type),
            Ok(FileType::Symlink)
        );
        assert_eq!(fs.metadata("/bin").map(|m| m.file_type), Ok(FileType::Dir));
        assert_eq!(fs.read_link("/etc/abs").as_deref(), Ok("/host-secret"));
        assert_eq!(
            fs.metadata("/big").map(|m| m.len),
            Ok(100),
            "size without reading"
        );
        assert_eq!(fs.read_prefix("/big", 3).as_deref(), Ok(&b"xxx"[..]));
        let names: Vec<_> = fs
            .read_dir("/bin")
            .expect("list")
            .into_iter()
            .map(|e| (e.name, e.file_type))
            .collect();
        assert_eq!(names, [("ls".to_owned(), FileType::File)]);
        let etc = fs.read_dir("/etc").expect("list etc");
        assert!(etc
            .iter()
            .any(|e| e.name == "abs" && e.file_type == FileType::Symlink));
        assert_eq!(
            fs.read_dir("/etc/os-release").map_err(|e| e.kind()),
            Err("not_a_directory")
        );
    }
}
