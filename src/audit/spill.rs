//! The on-disk spill: where audit events go when the in-memory queue is
//! full (the database is slow or down), so a burst costs disk, not events.
//!
//! Files live in `{data dir}/audit-spill/`. A node takes the first free
//! slot `N` (an exclusive `flock` on `audit-spill-N.lock`, so nodes sharing
//! a data directory never share files) and appends events, one JSON line
//! each, to `audit-spill-N.ndjson`. The writer task drains the spill when
//! the queue is empty: it renames the file to `audit-spill-N.drain-K.ndjson`
//! (producers start a fresh file), inserts its lines into the database and
//! deletes it. Inserts ignore ids already stored, so a file drained halfway
//! before a crash is simply drained again at the next start, along with
//! what other slots left behind when their node is gone.
//!
//! All files together stay under `max_bytes`; beyond, events are lost
//! (and counted).

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};

use serde::{Deserialize, Serialize};
use tokio::io::AsyncBufReadExt;

use super::stats::Counters;
use crate::store::AuditRecord;

/// Slots tried for a free lock.
const SLOTS: u32 = 64;
/// Longest line read back; anything longer is not ours.
const MAX_LINE: usize = 256 * 1024;

/// One spilled event: the record's fields, and `sunk` when the NDJSON file
/// and the audit webhook already have it (it was spilled at shutdown, after
/// being sent).
#[derive(Deserialize)]
pub(crate) struct SpillLine {
    #[serde(flatten)]
    record: AuditRecord,
    #[serde(default)]
    sunk: bool,
}

/// The same line, written from a borrowed record.
#[derive(Serialize)]
struct SpillLineRef<'a> {
    #[serde(flatten)]
    record: &'a AuditRecord,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    sunk: bool,
}

impl SpillLine {
    pub fn encode(record: &AuditRecord, sunk: bool) -> Option<Vec<u8>> {
        let mut bytes = serde_json::to_vec(&SpillLineRef { record, sunk }).ok()?;
        bytes.push(b'\n');
        Some(bytes)
    }

    pub fn into_record(self) -> (AuditRecord, bool) {
        (self.record, self.sunk)
    }
}

struct State {
    /// The file producers append to (opened on the first append).
    writer: Option<BufWriter<File>>,
    /// Bytes in that file, buffered ones included.
    current_bytes: u64,
    /// Files waiting to be drained (oldest first), with their sizes.
    pending: VecDeque<(PathBuf, u64)>,
    /// Bytes of files handed to the drainer and of `pending`.
    draining_bytes: u64,
    /// Next `K` of `drain-K`.
    next_seq: u64,
}

pub(crate) struct Spill {
    dir: PathBuf,
    slot: u32,
    max_bytes: u64,
    state: Mutex<State>,
    counters: Arc<Counters>,
    /// Held for the life of the process: the slot is ours.
    _lock: File,
}

impl Spill {
    /// Takes a slot in `dir` (created if missing) and picks up what earlier
    /// runs left behind, in this slot and in slots no live node holds.
    pub fn open(dir: &Path, max_bytes: u64, counters: Arc<Counters>) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let (slot, lock) = take_slot(dir)?;
        let mut pending = Vec::new();
        let mut next_seq = 0;
        // Ours first, then orphans (their lock taken only while moving them).
        for other in std::iter::once(slot).chain((0..SLOTS).filter(|s| *s != slot)) {
            let files = leftovers(dir, other)?;
            if files.is_empty() {
                continue;
            }
            let _held = if other == slot {
                None
            } else {
                match try_lock_slot(dir, other)? {
                    Some(f) => Some(f),
                    None => continue, // a live node's
                }
            };
            for file in files {
                let to = dir.join(format!("audit-spill-{slot}.drain-{next_seq}.ndjson"));
                next_seq += 1;
                if file != to {
                    std::fs::rename(&file, &to)?;
                }
                let size = std::fs::metadata(&to)?.len();
                if size == 0 {
                    let _ = std::fs::remove_file(&to);
                } else {
                    pending.push((to, size));
                }
            }
        }
        let draining_bytes = pending.iter().map(|(_, s)| s).sum();
        counters
            .spill_bytes
            .store(draining_bytes, Ordering::Relaxed);
        Ok(Self {
            dir: dir.to_path_buf(),
            slot,
            max_bytes,
            state: Mutex::new(State {
                writer: None,
                current_bytes: 0,
                pending: pending.into(),
                draining_bytes,
                next_seq,
            }),
            counters,
            _lock: lock,
        })
    }

    fn current_path(&self) -> PathBuf {
        self.dir.join(format!("audit-spill-{}.ndjson", self.slot))
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn publish(&self, s: &State) {
        self.counters
            .spill_bytes
            .store(s.current_bytes + s.draining_bytes, Ordering::Relaxed);
    }

    /// Appends one encoded line; false when the spill is full or the disk
    /// refuses (the caller counts the event as lost).
    pub fn append(&self, line: &[u8]) -> bool {
        let mut s = self.lock();
        if s.current_bytes + s.draining_bytes + line.len() as u64 > self.max_bytes {
            return false;
        }
        if s.writer.is_none() {
            match open_append(&self.current_path()) {
                Ok(f) => {
                    s.current_bytes = f.metadata().map(|m| m.len()).unwrap_or(0);
                    s.writer = Some(BufWriter::with_capacity(64 * 1024, f));
                }
                Err(_) => return false,
            }
        }
        let Some(w) = s.writer.as_mut() else {
            return false;
        };
        if w.write_all(line).is_err() {
            // Start over with a fresh handle next time.
            s.writer = None;
            return false;
        }
        s.current_bytes += line.len() as u64;
        self.publish(&s);
        true
    }

    /// Pushes buffered lines to the file (not to the disk).
    pub fn flush(&self) {
        let mut s = self.lock();
        if let Some(w) = s.writer.as_mut() {
            if w.flush().is_err() {
                s.writer = None;
            }
        }
    }

    /// Flushes and syncs to the disk (at shutdown).
    pub fn sync(&self) {
        let mut s = self.lock();
        if let Some(w) = s.writer.as_mut() {
            let ok = w.flush().is_ok() && w.get_ref().sync_data().is_ok();
            if !ok {
                s.writer = None;
            }
        }
    }

    /// True when something waits in the spill.
    pub fn has_data(&self) -> bool {
        let s = self.lock();
        s.current_bytes > 0 || !s.pending.is_empty()
    }

    /// The next file to drain: a leftover, or the current file (renamed,
    /// so producers continue in a fresh one).
    pub fn next_drain(&self) -> Option<(PathBuf, u64)> {
        let mut s = self.lock();
        if let Some(next) = s.pending.pop_front() {
            return Some(next);
        }
        if s.current_bytes == 0 {
            return None;
        }
        if let Some(mut w) = s.writer.take() {
            if w.flush().is_err() {
                // What did not reach the file is lost; the rest drains.
                tracing::warn!("audit spill: flushing the spill file failed");
            }
        }
        let to = self.dir.join(format!(
            "audit-spill-{}.drain-{}.ndjson",
            self.slot, s.next_seq
        ));
        s.next_seq += 1;
        let from = self.current_path();
        if let Err(e) = std::fs::rename(&from, &to) {
            tracing::warn!(error = %e, file = %from.display(), "audit spill: cannot rename the spill file for draining");
            return None;
        }
        let size = std::fs::metadata(&to)
            .map(|m| m.len())
            .unwrap_or(s.current_bytes);
        s.current_bytes = 0;
        s.draining_bytes += size;
        self.publish(&s);
        Some((to, size))
    }

    /// A drained file is in the database: delete it.
    pub fn finished(&self, path: &Path, size: u64) {
        let _ = std::fs::remove_file(path);
        let mut s = self.lock();
        s.draining_bytes = s.draining_bytes.saturating_sub(size);
        self.publish(&s);
    }
}

/// Reads a drain file in batches of lines.
pub(crate) struct DrainReader {
    pub path: PathBuf,
    pub size: u64,
    lines: tokio::io::BufReader<tokio::fs::File>,
}

impl DrainReader {
    pub async fn open(path: PathBuf, size: u64) -> std::io::Result<Self> {
        let file = tokio::fs::File::open(&path).await?;
        Ok(Self {
            path,
            size,
            lines: tokio::io::BufReader::with_capacity(64 * 1024, file),
        })
    }

    /// Up to `max` events, and how many lines could not be read back
    /// (a line cut by a crash). No events and no bad lines: the end.
    pub async fn next_batch(
        &mut self,
        max: usize,
    ) -> std::io::Result<(Vec<(AuditRecord, bool)>, u64)> {
        let mut out = Vec::new();
        let mut bad = 0;
        let mut buf = Vec::new();
        while out.len() < max {
            buf.clear();
            let n = read_line_bounded(&mut self.lines, &mut buf).await?;
            if n == 0 {
                break;
            }
            let line = buf.strip_suffix(b"\n").unwrap_or(&buf);
            if line.is_empty() {
                continue;
            }
            match serde_json::from_slice::<SpillLine>(line) {
                Ok(l) => out.push(l.into_record()),
                Err(_) => bad += 1,
            }
        }
        Ok((out, bad))
    }
}

/// Reads one line, keeping at most `MAX_LINE` bytes of it; 0 at the end.
async fn read_line_bounded(
    r: &mut tokio::io::BufReader<tokio::fs::File>,
    buf: &mut Vec<u8>,
) -> std::io::Result<usize> {
    let mut total = 0;
    loop {
        let available = r.fill_buf().await?;
        if available.is_empty() {
            return Ok(total);
        }
        let (used, done) = match available.iter().position(|b| *b == b'\n') {
            Some(i) => (i + 1, true),
            None => (available.len(), false),
        };
        if buf.len() < MAX_LINE {
            let keep = used.min(MAX_LINE - buf.len());
            buf.extend_from_slice(&available[..keep]);
        }
        r.consume(used);
        total += used;
        if done {
            return Ok(total);
        }
    }
}

fn open_append(path: &Path) -> std::io::Result<File> {
    let mut o = OpenOptions::new();
    o.create(true).append(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600);
    }
    o.open(path)
}

/// Spill files a slot left: its drain files, then its current file.
fn leftovers(dir: &Path, slot: u32) -> std::io::Result<Vec<PathBuf>> {
    let prefix = format!("audit-spill-{slot}.drain-");
    let mut drains: Vec<(u64, PathBuf)> = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(seq) = name
            .strip_prefix(&prefix)
            .and_then(|rest| rest.strip_suffix(".ndjson"))
            .and_then(|n| n.parse().ok())
        {
            drains.push((seq, entry.path()));
        }
    }
    drains.sort();
    let mut files: Vec<PathBuf> = drains.into_iter().map(|(_, p)| p).collect();
    let current = dir.join(format!("audit-spill-{slot}.ndjson"));
    if current.exists() {
        files.push(current);
    }
    Ok(files)
}

fn take_slot(dir: &Path) -> std::io::Result<(u32, File)> {
    for slot in 0..SLOTS {
        if let Some(f) = try_lock_slot(dir, slot)? {
            return Ok((slot, f));
        }
    }
    Err(std::io::Error::other(format!(
        "all {SLOTS} audit spill slots in {} are held by running nodes",
        dir.display()
    )))
}

fn try_lock_slot(dir: &Path, slot: u32) -> std::io::Result<Option<File>> {
    let mut o = OpenOptions::new();
    o.create(true).truncate(false).write(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600);
    }
    let f = o.open(dir.join(format!("audit-spill-{slot}.lock")))?;
    Ok(try_lock(&f).then_some(f))
}

#[cfg(unix)]
fn try_lock(f: &File) -> bool {
    use std::os::unix::io::AsRawFd;
    // SAFETY: flock only takes a descriptor this function borrows.
    unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) == 0 }
}

#[cfg(not(unix))]
fn try_lock(_: &File) -> bool {
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(i: u64) -> AuditRecord {
        AuditRecord {
            id: format!("e{i}"),
            tenant_id: "default".into(),
            at: 1_700_000_000,
            kind: "token".into(),
            outcome: "success".into(),
            client_id: Some("c".into()),
            subject: None,
            source_ip: Some("127.0.0.1".into()),
            detail: r#"{"grant_type":"client_credentials"}"#.into(),
        }
    }

    async fn drain_all(spill: &Spill) -> Vec<(AuditRecord, bool)> {
        let mut all = Vec::new();
        while let Some((path, size)) = spill.next_drain() {
            let mut r = DrainReader::open(path.clone(), size).await.unwrap();
            loop {
                let (batch, bad) = r.next_batch(7).await.unwrap();
                assert_eq!(bad, 0);
                if batch.is_empty() {
                    break;
                }
                all.extend(batch);
            }
            spill.finished(&path, size);
        }
        all
    }

    #[tokio::test]
    async fn spilled_events_come_back_in_order_and_the_files_go() {
        let dir = tempfile::tempdir().unwrap();
        let counters = Arc::new(Counters::default());
        let spill = Spill::open(dir.path(), 1 << 20, counters.clone()).unwrap();
        for i in 0..20 {
            assert!(spill.append(&SpillLine::encode(&record(i), i == 3).unwrap()));
        }
        assert!(counters.spill_bytes.load(Ordering::Relaxed) > 0);
        let back = drain_all(&spill).await;
        let ids: Vec<String> = back.iter().map(|(r, _)| r.id.clone()).collect();
        assert_eq!(ids, (0..20).map(|i| format!("e{i}")).collect::<Vec<_>>());
        assert!(back[3].1 && !back[4].1, "the sunk flag survives");
        assert_eq!(counters.spill_bytes.load(Ordering::Relaxed), 0);
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".ndjson"))
            .collect();
        assert!(left.is_empty(), "drained files are deleted: {left:?}");
    }

    #[tokio::test]
    async fn the_spill_is_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let line = SpillLine::encode(&record(0), false).unwrap();
        let max = line.len() as u64 * 5;
        let spill = Spill::open(dir.path(), max, Arc::default()).unwrap();
        let taken = (0..10).filter(|_| spill.append(&line)).count();
        assert_eq!(taken, 5, "five lines fit");
        // A file handed to the drainer still counts until it is drained.
        let (path, size) = spill.next_drain().unwrap();
        assert!(!spill.append(&line), "still full while draining");
        spill.finished(&path, size);
        assert!(spill.append(&line), "room again once drained");
    }

    #[tokio::test]
    async fn a_new_run_drains_what_the_last_one_left_and_nodes_get_their_own_slot() {
        let dir = tempfile::tempdir().unwrap();
        {
            let first = Spill::open(dir.path(), 1 << 20, Arc::default()).unwrap();
            for i in 0..3 {
                assert!(first.append(&SpillLine::encode(&record(i), false).unwrap()));
            }
            // Half drained when the process died: the drain file stays.
            let _ = first.next_drain().unwrap();
            assert!(first.append(&SpillLine::encode(&record(3), false).unwrap()));
            first.sync();
            // A second node on the same data directory, alive meanwhile.
            let second = Spill::open(dir.path(), 1 << 20, Arc::default()).unwrap();
            assert_ne!(first.slot, second.slot);
            assert!(!second.has_data(), "the live node's files are not taken");
        }
        let next = Spill::open(dir.path(), 1 << 20, Arc::default()).unwrap();
        let ids: Vec<String> = drain_all(&next)
            .await
            .into_iter()
            .map(|(r, _)| r.id)
            .collect();
        assert_eq!(ids, ["e0", "e1", "e2", "e3"]);
    }

    #[tokio::test]
    async fn a_cut_line_is_skipped_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let spill = Spill::open(dir.path(), 1 << 20, Arc::default()).unwrap();
        assert!(spill.append(&SpillLine::encode(&record(0), false).unwrap()));
        assert!(spill.append(b"{\"id\":\"e1\",\"tena"));
        let (path, size) = spill.next_drain().unwrap();
        let mut r = DrainReader::open(path, size).await.unwrap();
        let (batch, bad) = r.next_batch(10).await.unwrap();
        assert_eq!((batch.len(), bad), (1, 1));
    }
}
