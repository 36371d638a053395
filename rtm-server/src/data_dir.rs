//! The data directory's lock: one server per directory (`docs/operators.md`).
//!
//! Two servers on one directory would each count metadata revisions on their own. The lock is
//! an operating-system lock on the file `lock` in the directory (`File::try_lock`), so a
//! server that dies, even killed with SIGKILL, leaves nothing that blocks its successor: the
//! system releases the lock with the process. The file itself stays, holding the pid of the
//! last holder, which is what a refused server reports.

use std::fs::{File, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

/// The lock file's name in the data directory.
pub(crate) const LOCK_FILE: &str = "lock";

/// Why the data directory could not be taken.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DataDirError {
    /// Another server (in this process or another) holds the directory's lock.
    #[error(
        "data directory {} is in use by another rtm-server ({}); stop it, or give this one \
         another data_dir",
        dir.display(),
        pid.map_or("pid unknown".into(), |p| format!("pid {p}"))
    )]
    InUse {
        /// The directory.
        dir: PathBuf,
        /// The holder's process id, as it wrote it in the lock file.
        pid: Option<u32>,
    },
    /// The directory or its lock file could not be created, opened or locked.
    #[error("cannot lock the data directory {}: {source}", dir.display())]
    Io {
        /// The directory.
        dir: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// The exclusive lock on a data directory, held until dropped.
#[derive(Debug)]
pub(crate) struct DataDirLock {
    /// Kept open: closing the file releases the lock.
    _file: File,
}

impl DataDirLock {
    /// Creates `dir` if needed and takes its lock, writing this process's id in the file.
    pub(crate) fn acquire(dir: &Path) -> Result<Self, DataDirError> {
        let io = |source| DataDirError::Io {
            dir: dir.to_owned(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        let mut file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(dir.join(LOCK_FILE))
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut text = String::new();
                // The holder may not have written its pid yet: then it is unknown.
                let pid = file
                    .read_to_string(&mut text)
                    .ok()
                    .and_then(|_| text.trim().parse().ok());
                return Err(DataDirError::InUse {
                    dir: dir.to_owned(),
                    pid,
                });
            }
            Err(TryLockError::Error(e)) => return Err(io(e)),
        }
        file.set_len(0).map_err(io)?;
        file.rewind().map_err(io)?;
        writeln!(file, "{}", std::process::id()).map_err(io)?;
        Ok(Self { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_is_refused_with_the_holder_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let first = DataDirLock::acquire(&data).unwrap();
        let err = DataDirLock::acquire(&data).unwrap_err();
        let pid = std::process::id();
        assert!(
            matches!(err, DataDirError::InUse { pid: Some(p), .. } if p == pid),
            "{err:?}"
        );
        let text = err.to_string();
        assert!(
            text.contains(&format!(
                "{} is in use by another rtm-server (pid {pid})",
                data.display()
            )),
            "{text}"
        );
        drop(first);
        let _again = DataDirLock::acquire(&data).unwrap();
    }
}
