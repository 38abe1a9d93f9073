//! The local directory sink. Without a directory, results stay where the scan wrote them and
//! are acknowledged as they are. With one, each file is copied to `DIR/<group>/<name>` through
//! a temporary file, fsync and rename, so the directory never shows a half-written result;
//! `<group>` is the item's `scan_id` field (else `snapshot_name`, else `results`).
//!
//! Not here: retention or clean-up of that directory.

use std::path::{Path, PathBuf};

use super::{Outcome, UploadError, UploadItem};

/// Store `item` under `dir`, or acknowledge it in place when `dir` is `None`.
pub async fn store(
    dir: Option<&Path>,
    item: &UploadItem,
) -> Result<Outcome, (UploadError, Outcome)> {
    let Some(dir) = dir else {
        return Ok(Outcome {
            acknowledged: true,
            receipt: Some(item.path.display().to_string()),
            ..Outcome::default()
        });
    };
    let group = ["scan_id", "snapshot_name"]
        .iter()
        .find_map(|k| item.fields.get(*k))
        .map(|g| crate::scan::sanitize(g))
        .unwrap_or_else(|| "results".into());
    let target_dir = dir.join(group);
    let target = target_dir.join(item.file_name());
    let (src, dst_dir, dst) = (item.path.clone(), target_dir, target.clone());
    let result = tokio::task::spawn_blocking(move || copy_atomic(&src, &dst_dir, &dst))
        .await
        .map_err(|e| UploadError::io("copy task failed", std::io::Error::other(e)))
        .and_then(|r| r);
    match result {
        Ok(bytes) => Ok(Outcome {
            acknowledged: true,
            bytes_sent: bytes,
            receipt: Some(target.display().to_string()),
            ..Outcome::default()
        }),
        Err(e) => Err((e, Outcome::default())),
    }
}

fn copy_atomic(src: &Path, dir: &Path, dst: &Path) -> Result<u64, UploadError> {
    std::fs::create_dir_all(dir)
        .map_err(|e| UploadError::io(format!("cannot create '{}'", dir.display()), e))?;
    let name = dst
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp: PathBuf = dir.join(format!(".{name}.part"));
    let copy = || -> std::io::Result<u64> {
        let n = std::fs::copy(src, &tmp)?;
        std::fs::File::open(&tmp)?.sync_all()?;
        std::fs::rename(&tmp, dst)?;
        std::fs::File::open(dir)?.sync_all()?;
        Ok(n)
    };
    copy().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        UploadError::io(
            format!("cannot copy '{}' to '{}'", src.display(), dst.display()),
            e,
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[tokio::test]
    async fn in_place_and_copied() {
        let dir = tempfile::tempdir().expect("tempdir");
        let src = dir.path().join("a.cdx.json");
        std::fs::write(&src, b"{}").expect("write");
        let fields = BTreeMap::from([("scan_id".to_owned(), "s/1".to_owned())]);
        let item = UploadItem::new(&src, fields).await.expect("item");
        let o = store(None, &item).await.expect("in place");
        assert!(o.acknowledged);
        assert_eq!(o.receipt.as_deref(), Some(src.to_string_lossy().as_ref()));

        let sink = dir.path().join("sink");
        let o = store(Some(&sink), &item).await.expect("copied");
        let copy = sink.join("s_1").join("a.cdx.json");
        assert_eq!(o.receipt.as_deref(), Some(copy.to_string_lossy().as_ref()));
        assert_eq!(std::fs::read(&copy).expect("copy"), b"{}");
        assert!(src.exists(), "the original stays");
        let leftovers: Vec<_> = std::fs::read_dir(sink.join("s_1"))
            .expect("list")
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(leftovers.len(), 1, "{leftovers:?}");

        // An unwritable target is a failure, the original is untouched.
        let blocked = dir.path().join("file");
        std::fs::write(&blocked, b"x").expect("write");
        let (e, _) = store(Some(&blocked), &item)
            .await
            .expect_err("not a directory");
        assert_eq!(e.kind(), "io");
        assert!(src.exists());
    }
}
