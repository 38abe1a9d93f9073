//! The sqlite rpm database (`rpmdb.sqlite`, rpm ≥ 4.16: RHEL 9, Fedora ≥ 33, SUSE ≥ 15.4):
//! the header blobs of its `Packages(hnum, blob)` table.
//!
//! SQLite cannot read from memory with its write-ahead log applied, and must never write next to
//! the file on the scanned disk, so the bytes already read through the [`crate::fs::RootFs`] are
//! written to a private directory (mode 0700 under [`std::env::temp_dir`], removed afterwards):
//! the database, and its `-wal` file when the disk has one, since rpm runs sqlite in WAL mode
//! and committed transactions may still be only there. The disk's `-shm` file is **not**
//! copied: it is only an index of the WAL, which SQLite rebuilds from the WAL itself, and a
//! stale or hostile one could make it read the wrong frames. The copy is opened
//! `SQLITE_OPEN_READ_ONLY` with the defensive flags set (no triggers, no views, untrusted
//! schema), and `Packages` must be a real table.
//!
//! A file that is not a database, a damaged page or a missing table is an error for the
//! caller's warning; a row whose `blob` is not a blob, or longer than
//! [`super::header::MAX_BLOB_LEN`], is counted in [`Rows::bad_rows`]. It does not read the index
//! tables (`Name`, `Basenames`...), which rpm derives from the headers, nor a rollback
//! `-journal` (rpm does not use one). Schema: rpm's `lib/backend/sqlite.c`.
#![deny(clippy::arithmetic_side_effects, clippy::as_conversions)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{bail, Context};
use rusqlite::config::DbConfig;
use rusqlite::{Connection, OpenFlags};

use super::header::MAX_BLOB_LEN;

/// What [`blobs`] read.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Rows {
    /// The header blobs, in `hnum` order.
    pub blobs: Vec<Vec<u8>>,
    /// Rows skipped: `blob` NULL, not a blob, or too long.
    pub bad_rows: usize,
}

/// A private temporary directory, removed on drop.
struct PrivateDir(PathBuf);

impl PrivateDir {
    fn new() -> anyhow::Result<Self> {
        use std::os::unix::fs::DirBuilderExt;
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let base = std::env::temp_dir();
        let mut last = None;
        for _ in 0..8 {
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or_default();
            let dir = base.join(format!("snapscan-rpmdb-{}-{n}-{nanos}", std::process::id()));
            match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
                Ok(()) => return Ok(PrivateDir(dir)),
                Err(e) => last = Some(e),
            }
        }
        let e = last.unwrap_or_else(|| std::io::Error::other("no attempt made"));
        Err(e).with_context(|| {
            format!(
                "failed to create a private directory under '{}'",
                base.display()
            )
        })
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for PrivateDir {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.0) {
            tracing::warn!(dir = %self.0.display(), error = %e, "failed to remove a temporary rpmdb copy");
        }
    }
}

/// The header blobs of the sqlite rpm database `db` (the bytes of `rpmdb.sqlite`), with its
/// write-ahead log `wal` applied when given.
///
/// # Errors
///
/// The private copy cannot be written, or SQLite refuses the database (not a database,
/// damaged, no `Packages` table).
pub fn blobs(db: &[u8], wal: Option<&[u8]>) -> anyhow::Result<Rows> {
    let dir = PrivateDir::new()?;
    let path = dir.path().join("rpmdb.sqlite");
    std::fs::write(&path, db).with_context(|| format!("failed to write '{}'", path.display()))?;
    if let Some(wal) = wal {
        let wal_path = dir.path().join("rpmdb.sqlite-wal");
        std::fs::write(&wal_path, wal)
            .with_context(|| format!("failed to write '{}'", wal_path.display()))?;
    }
    let rows = query(&path).context("cannot read the sqlite rpm database")?;
    drop(dir);
    Ok(rows)
}

fn query(path: &Path) -> anyhow::Result<Rows> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_DEFENSIVE, true)?;
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_TRUSTED_SCHEMA, false)?;
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_TRIGGER, false)?;
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_VIEW, false)?;
    let kind: Option<String> = conn
        .query_row(
            "SELECT type FROM sqlite_master WHERE name = 'Packages'",
            [],
            |r| r.get(0),
        )
        .map(Some)
        .or_else(|e| match e {
            rusqlite::Error::QueryReturnedNoRows => Ok(None),
            e => Err(e),
        })?;
    if kind.as_deref() != Some("table") {
        bail!("no Packages table");
    }
    let mut stmt = conn.prepare("SELECT blob FROM Packages ORDER BY hnum")?;
    let mut rows = stmt.query([])?;
    let mut out = Rows::default();
    while let Some(row) = rows.next()? {
        match row.get_ref(0)?.as_blob() {
            Ok(b) if b.len() <= MAX_BLOB_LEN => out.blobs.push(b.to_vec()),
            _ => out.bad_rows = out.bad_rows.saturating_add(1),
        }
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::arithmetic_side_effects)]
mod tests {
    use super::*;
    use crate::inventory::rpm::header::sample;

    /// A database like rpm's, made in `dir`; with `keep_open`, the connection is returned open
    /// so that the last transaction is still only in the `-wal` file.
    fn make(dir: &Path, blobs: &[Vec<u8>]) -> Connection {
        let conn = Connection::open(dir.join("rpmdb.sqlite")).expect("open");
        conn.pragma_update(None, "journal_mode", "wal")
            .expect("wal");
        conn.pragma_update(None, "wal_autocheckpoint", 0)
            .expect("no checkpoint");
        conn.execute_batch(
            "CREATE TABLE Packages (hnum INTEGER PRIMARY KEY AUTOINCREMENT, blob BLOB NOT NULL)",
        )
        .expect("create");
        for b in blobs {
            conn.execute("INSERT INTO Packages (blob) VALUES (?1)", [b])
                .expect("insert");
        }
        conn
    }

    fn read_files(dir: &Path) -> (Vec<u8>, Option<Vec<u8>>) {
        let db = std::fs::read(dir.join("rpmdb.sqlite")).expect("db");
        let wal = std::fs::read(dir.join("rpmdb.sqlite-wal")).ok();
        (db, wal)
    }

    #[test]
    fn reads_rows_from_the_wal() {
        let dir = tempfile::tempdir().expect("tempdir");
        let want = vec![sample("a", None), sample("b", Some(2))];
        let conn = make(dir.path(), &want);
        // Still open and never checkpointed: the rows are only in the WAL.
        let (db, wal) = read_files(dir.path());
        let wal = wal.expect("a wal file");
        assert!(!wal.is_empty(), "the wal holds the inserts");
        assert_eq!(blobs(&db, Some(&wal)).expect("blobs").blobs, want);
        // Without the WAL the table does not even exist yet.
        assert!(blobs(&db, None).is_err());
        drop(conn);
        let (db, _) = read_files(dir.path());
        assert_eq!(blobs(&db, None).expect("blobs").blobs, want);
    }

    #[test]
    fn refusals() {
        struct Case {
            name: &'static str,
            sql: &'static str,
            /// `Err(part of the message)` or `Ok(bad rows)`.
            want: Result<usize, &'static str>,
        }
        let cases = [
            Case {
                name: "no Packages table",
                sql: "CREATE TABLE Other (x)",
                want: Err("no Packages table"),
            },
            Case {
                name: "Packages is a view",
                sql: "CREATE TABLE T (hnum, blob); CREATE VIEW Packages AS SELECT * FROM T",
                want: Err("no Packages table"),
            },
            Case {
                name: "text and null blobs are bad rows",
                sql: "CREATE TABLE Packages (hnum INTEGER PRIMARY KEY, blob); \
                      INSERT INTO Packages VALUES (1, 'text'), (2, NULL), (3, x'00')",
                want: Ok(2),
            },
            Case {
                name: "no blob column",
                sql: "CREATE TABLE Packages (hnum INTEGER PRIMARY KEY)",
                want: Err("no such column"),
            },
        ];
        for c in cases {
            let dir = tempfile::tempdir().expect("tempdir");
            let conn = Connection::open(dir.path().join("rpmdb.sqlite")).expect("open");
            conn.execute_batch(c.sql).expect("sql");
            drop(conn);
            let (db, _) = read_files(dir.path());
            let got = blobs(&db, None)
                .map(|r| r.bad_rows)
                .map_err(|e| format!("{e:#}"));
            match (&got, c.want) {
                (Ok(n), Ok(want)) => assert_eq!(*n, want, "case {}", c.name),
                (Err(msg), Err(want)) => assert!(msg.contains(want), "case {}: {msg}", c.name),
                _ => panic!("case {}: got {got:?}", c.name),
            }
        }
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let cases: [(&str, Vec<u8>); 4] = [
            ("empty", vec![]),
            ("text", b"hello world".to_vec()),
            ("sqlite magic then zeros", {
                let mut v = b"SQLite format 3\0".to_vec();
                v.resize(4096, 0);
                v
            }),
            ("truncated real db", {
                let dir = tempfile::tempdir().expect("tempdir");
                drop(make(dir.path(), &[sample("a", None)]));
                let (db, _) = read_files(dir.path());
                db[..db.len() / 2].to_vec()
            }),
        ];
        for (name, bytes) in cases {
            // An empty file is a valid empty database to SQLite: no Packages table.
            assert!(blobs(&bytes, None).is_err(), "case {name}");
        }
    }
}
