//! The ledger's local journal: `usage.journal` (one JSON event per line, append-only),
//! `usage.checkpoint` (how far the database has it, written by rename), and `journal.lock` (held
//! for the life of the process, so two servers never share a journal).
//!
//! Offsets here are byte offsets in the file. The file is truncated only when the database has
//! all of it; `base` counts the bytes truncated away so the process can speak of positions that
//! only grow.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use super::UsageEvent;

pub(super) struct Journal {
    path: PathBuf,
    checkpoint_path: PathBuf,
    file: Mutex<Tail>,
    /// The same file through a second descriptor, for `sync`: an fsync through it flushes what
    /// was appended through `file`, without holding the appenders' lock while the disk works.
    durable: File,
    base: AtomicU64,
    opened_at: u64,
    _lock: File,
}

struct Tail {
    file: File,
    len: u64,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Journal {
    pub fn open(dir: &Path) -> std::io::Result<Journal> {
        std::fs::create_dir_all(dir)?;
        let lock_file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join("journal.lock"))?;
        if lock_file.try_lock().is_err() {
            return Err(std::io::Error::other(format!(
                "the usage journal {} is in use by another aiaas process; give each server its \
                 own ledger.journal_dir",
                dir.display()
            )));
        }
        let path = dir.join("usage.journal");
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .open(&path)?;
        let mut len = file.metadata()?.len();
        // A line cut short by a crash mid-write is closed, so the next event starts a line of its
        // own (the cut line is skipped, with a warning, when read).
        if len > 0 {
            let mut last = [0u8; 1];
            file.seek(SeekFrom::Start(len - 1))?;
            file.read_exact(&mut last)?;
            if last[0] != b'\n' {
                file.write_all(b"\n")?;
                len += 1;
            }
        }
        let checkpoint_path = dir.join("usage.checkpoint");
        let checkpoint = std::fs::read_to_string(&checkpoint_path)
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .unwrap_or(0)
            .min(len);
        if checkpoint < len {
            tracing::warn!(
                bytes = len - checkpoint,
                "ledger: the journal holds events not yet in the database; writing them now"
            );
        }
        let durable = file.try_clone()?;
        Ok(Journal {
            path,
            checkpoint_path,
            file: Mutex::new(Tail { file, len }),
            durable,
            base: AtomicU64::new(0),
            opened_at: checkpoint,
            _lock: lock_file,
        })
    }

    /// The file offset the database had when the journal was opened.
    pub fn checkpoint(&self) -> u64 {
        self.opened_at
    }

    /// Append one event; returns the position after it.
    pub fn append(&self, event: &UsageEvent) -> std::io::Result<u64> {
        let mut line = serde_json::to_vec(event).map_err(std::io::Error::other)?;
        line.push(b'\n');
        let mut tail = lock(&self.file);
        tail.file.write_all(&line)?;
        tail.len += line.len() as u64;
        Ok(self.base.load(Ordering::Acquire) + tail.len)
    }

    /// Position of the end of the journal (only grows during a process's life).
    pub fn len(&self) -> u64 {
        let tail = lock(&self.file);
        self.base.load(Ordering::Acquire) + tail.len
    }

    /// The position of a file offset.
    pub fn position(&self, offset: u64) -> u64 {
        self.base.load(Ordering::Acquire) + offset
    }

    /// Up to `max` events from file offset `from`, and the offset after the last line read.
    /// Only whole lines are read.
    pub fn read_from(&self, from: u64, max: usize) -> std::io::Result<(Vec<UsageEvent>, u64)> {
        let end = lock(&self.file).len;
        if from >= end {
            return Ok((Vec::new(), from));
        }
        let mut file = File::open(&self.path)?;
        file.seek(SeekFrom::Start(from))?;
        let mut reader = BufReader::new(file.take(end - from));
        let mut events = Vec::new();
        let mut offset = from;
        let mut line = Vec::new();
        while events.len() < max {
            line.clear();
            let n = reader.read_until(b'\n', &mut line)?;
            if n == 0 || line.last() != Some(&b'\n') {
                break;
            }
            offset += n as u64;
            match serde_json::from_slice::<UsageEvent>(&line) {
                Ok(event) => events.push(event),
                Err(err) if line.len() > 1 => {
                    tracing::warn!(error = %err, offset, "ledger: unreadable journal line skipped")
                }
                Err(_) => {}
            }
        }
        Ok((events, offset))
    }

    /// Make what was appended so far durable on disk (not only in the page cache). Requests
    /// that finish meanwhile append without waiting for it.
    pub fn sync(&self) -> std::io::Result<()> {
        self.durable.sync_data()
    }

    /// Record that the database has everything before file offset `offset`.
    pub fn commit(&self, offset: u64) -> std::io::Result<()> {
        let tmp = self.checkpoint_path.with_extension("tmp");
        std::fs::write(&tmp, offset.to_string())?;
        std::fs::rename(&tmp, &self.checkpoint_path)
    }

    /// Truncate the journal if the database has all of it and it has grown past `limit`;
    /// returns true if it did (the checkpoint is then 0).
    pub fn rotate(&self, offset: u64, limit: u64) -> std::io::Result<bool> {
        let mut tail = lock(&self.file);
        if tail.len != offset || tail.len < limit {
            return Ok(false);
        }
        self.commit(0)?;
        tail.file.set_len(0)?;
        self.base.fetch_add(tail.len, Ordering::AcqRel);
        tail.len = 0;
        Ok(true)
    }
}
