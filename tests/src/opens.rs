//! Which files, device nodes included, were opened, with inotify (`IN_OPEN`): any `open(2)` of
//! the inode by any process, whether through the node itself or a link to it, read-only or not.
//!
//! Not here: how often (the kernel merges identical events that are not read yet), who opened it
//! (inotify does not say), or opens through another node of the same device (a `mknod`
//! elsewhere).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::Context;
use nix::errno::Errno;
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, WatchDescriptor};

/// Watches on a set of paths; [`Opens::opened`] reads what happened so far.
pub struct Opens {
    inotify: Inotify,
    watched: Vec<(WatchDescriptor, PathBuf)>,
    opened: BTreeSet<PathBuf>,
}

impl Opens {
    /// Start watching the opens of each of `paths`.
    ///
    /// # Errors
    ///
    /// inotify is unavailable or a path cannot be watched.
    pub fn watch(paths: &[&Path]) -> anyhow::Result<Opens> {
        let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)
            .context("inotify_init")?;
        let mut watched = Vec::new();
        for p in paths {
            let wd = inotify
                .add_watch(*p, AddWatchFlags::IN_OPEN)
                .with_context(|| format!("cannot watch '{}'", p.display()))?;
            watched.push((wd, p.to_path_buf()));
        }
        Ok(Opens {
            inotify,
            watched,
            opened: BTreeSet::new(),
        })
    }

    /// The paths opened since [`Opens::watch`].
    ///
    /// # Errors
    ///
    /// The event queue overflowed (opens were lost) or cannot be read.
    pub fn opened(&mut self) -> anyhow::Result<BTreeSet<PathBuf>> {
        loop {
            let events = match self.inotify.read_events() {
                Ok(e) => e,
                Err(Errno::EAGAIN) => break,
                Err(e) => return Err(e).context("read inotify events"),
            };
            for ev in events {
                anyhow::ensure!(
                    !ev.mask.contains(AddWatchFlags::IN_Q_OVERFLOW),
                    "inotify queue overflowed"
                );
                if let Some((_, path)) = self.watched.iter().find(|(wd, _)| *wd == ev.wd) {
                    if ev.mask.contains(AddWatchFlags::IN_OPEN) {
                        self.opened.insert(path.clone());
                    }
                }
            }
        }
        Ok(self.opened.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sees_opens_through_links_and_nothing_else() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        std::fs::write(&a, "x").expect("a");
        std::fs::write(&b, "y").expect("b");
        let mut opens = Opens::watch(&[&a, &b]).expect("watch");
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&a, &link).expect("link");
        let _ = std::fs::File::open(&link).expect("open through the link");
        let _ = std::fs::metadata(&b).expect("stat b");
        assert_eq!(opens.opened().expect("opened"), BTreeSet::from([a.clone()]));
        let _ = std::fs::read(&b).expect("read b");
        assert_eq!(opens.opened().expect("opened"), BTreeSet::from([a, b]));
    }
}
