//! Persistent mode's flow-table journal.
//!
//! With `--pin-path` the programs and maps outlive the agent, so the kernel
//! keeps counting while it restarts. What would still be lost is the
//! agent's own state: the flows in its table whose counts were drained but
//! not yet written as records. The journal keeps that state in a file.
//!
//! A drain in persistent mode is two-phase (see [`crate::drain`]): the
//! retired buffer is read but not deleted; the deltas are applied to the
//! table and the records written; then one journal frame is appended; only
//! then is the retired buffer cleared. A frame holds the after-image of
//! every flow the drain touched (or a tombstone for a flow that ended),
//! plus the table's counters, the buffer that was active after the flip,
//! and the length of the records file once this drain's records were
//! flushed. After-images make replay idempotent.
//!
//! After a crash (even SIGKILL) the agent replays the journal and then
//! compares the buffer flag in the pinned `CONTROL` map with the last
//! frame's:
//!
//! - the same: the retired buffer was already applied; what is left of it
//!   is deleted without counting it again;
//! - different: a flip happened after the last frame, so the retired
//!   buffer was never applied; the first drain reads it without flipping.
//!
//! The records file is cut back to the length in the last frame, so
//! records of a drain whose frame was never written are written once, by
//! the drain that repeats it. Nothing is lost and nothing is counted twice.
//!
//! Frames are written with `write(2)` and never synced: the journal only
//! has to survive the agent, not the machine. The pins do not survive a
//! reboot either, and a journal whose map identities differ from the
//! current pins (a reboot, or pins removed and recreated) is discarded.
//!
//! Format: frames of `magic u32, kind u32, payload length u64, payload,
//! FNV-1a 64 of the payload`, little-endian. A torn or corrupt tail is cut
//! off at the last good frame. A `full` frame holds the whole table and
//! resets it; `delta` frames follow. When the file outgrows four times the
//! last full frame (at least 16 MiB) it is rewritten as one full frame,
//! through a temporary file and a rename.

use std::{
    fs::{File, OpenOptions},
    io::{self, Read, Write},
    path::{Path, PathBuf},
};

use sensor_common::{FlowKey, FlowValue};

use crate::flowtable::{FlowEntry, TableMeta};

const MAGIC: u32 = 0x314a_4e53; // "SNJ1"
const KIND_FULL: u32 = 1;
const KIND_DELTA: u32 = 2;
const FRAME_OVERHEAD: u64 = 4 + 4 + 8 + 8;
const COMPACT_MIN: u64 = 16 << 20;
const FILE_NAME: &str = "flows.journal";

/// Errors of the journal, each naming the file.
#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    #[error(
        "persistent-mode state {}: {source}; check that --state-dir exists or can be \
         created and is writable",
        path.display()
    )]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// What a frame says besides the flows.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Header {
    /// Kernel ids of the pinned FLOWS_A, FLOWS_B and CONTROL maps.
    pub identity: [u32; 3],
    /// Drains committed so far.
    pub seq: u64,
    /// The flow buffer the programs wrote after this drain's flip.
    pub active_after: u32,
    /// Monotonic time of this drain's flip: the start of the next interval.
    pub last_flip_ns: u64,
    /// Length of the records file after this drain's records, if records
    /// go to a file.
    pub records_len: Option<u64>,
    /// The table's counters.
    pub table: TableMeta,
}

/// The state a journal held.
#[derive(Debug, Default)]
pub struct Recovered {
    pub header: Header,
    pub entries: Vec<FlowEntry>,
    /// Frames replayed.
    pub frames: u64,
    /// Bytes of a torn or corrupt tail that were cut off.
    pub torn_bytes: u64,
}

/// An open journal, appended to by every drain.
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    file: File,
    len: u64,
    last_full: u64,
    frames: u64,
}

impl Journal {
    /// Opens (creating `dir` if needed) the journal and replays it. Returns
    /// the recovered state unless the journal is empty or belongs to other
    /// maps than `identity`.
    pub fn open(
        dir: &Path,
        identity: [u32; 3],
    ) -> Result<(Journal, Option<Recovered>), PersistError> {
        let path = dir.join(FILE_NAME);
        let io_err = |source| PersistError::Io {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io_err)?;
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io_err)?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(io_err)?;
        let (recovered, good_len, last_full) = replay(&bytes);
        let stale = recovered
            .as_ref()
            .is_some_and(|r| r.header.identity != identity);
        let (recovered, len) = if stale || recovered.is_none() {
            (None, 0)
        } else {
            (recovered, good_len)
        };
        file.set_len(len).map_err(io_err)?;
        let mut journal = Journal {
            path,
            file,
            len,
            last_full,
            frames: recovered.as_ref().map_or(0, |r| r.frames),
        };
        journal.seek_end()?;
        if stale {
            tracing::warn!(
                path = %journal.path.display(),
                "the journal belongs to earlier maps (a reboot, or the pins were removed); \
                 starting with an empty flow table"
            );
        }
        Ok((journal, recovered))
    }

    /// Appends one drain's frame: the after-images of `upserts`, tombstones
    /// for `removes`. Compacts into one full frame of `full()` when the file
    /// has grown too large.
    pub fn commit(
        &mut self,
        header: &Header,
        upserts: &[FlowEntry],
        removes: &[FlowKey],
        full: impl FnOnce() -> Vec<FlowEntry>,
    ) -> Result<(), PersistError> {
        let threshold = (self.last_full * 4).max(COMPACT_MIN);
        if self.len > threshold || self.frames == 0 {
            let all = full();
            return self.rewrite(header, &all);
        }
        let frame = encode(KIND_DELTA, header, upserts, removes);
        self.file.write_all(&frame).map_err(|e| self.err(e))?;
        self.len += frame.len() as u64;
        self.frames += 1;
        Ok(())
    }

    /// Journal file size in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// True when nothing is journaled.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Removes the journal (after a clean, final flush).
    pub fn remove(self) -> Result<(), PersistError> {
        std::fs::remove_file(&self.path).map_err(|e| self.err(e))
    }

    fn rewrite(&mut self, header: &Header, all: &[FlowEntry]) -> Result<(), PersistError> {
        let frame = encode(KIND_FULL, header, all, &[]);
        let tmp = self.path.with_extension("journal.tmp");
        let io_err = |source| PersistError::Io {
            path: tmp.clone(),
            source,
        };
        let mut f = File::create(&tmp).map_err(io_err)?;
        f.write_all(&frame).map_err(io_err)?;
        std::fs::rename(&tmp, &self.path).map_err(|e| self.err(e))?;
        self.file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&self.path)
            .map_err(|e| self.err(e))?;
        self.len = frame.len() as u64;
        self.last_full = self.len;
        self.frames = 1;
        self.seek_end()
    }

    fn seek_end(&mut self) -> Result<(), PersistError> {
        use std::io::Seek;
        self.file
            .seek(io::SeekFrom::Start(self.len))
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    fn err(&self, source: io::Error) -> PersistError {
        PersistError::Io {
            path: self.path.clone(),
            source,
        }
    }
}

fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

fn pod_bytes<T: Copy>(v: &T) -> &[u8] {
    // SAFETY: only used with FlowKey and FlowValue: repr(C) with explicit
    // padding fields, so every byte is initialised.
    unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), std::mem::size_of::<T>()) }
}

fn pod_from<T: Copy + Default>(bytes: &[u8]) -> T {
    let mut v = T::default();
    let n = std::mem::size_of::<T>().min(bytes.len());
    // SAFETY: FlowKey and FlowValue accept any bit pattern; at most
    // size_of::<T>() bytes are copied into it.
    unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), (&mut v as *mut T).cast::<u8>(), n) };
    v
}

const KEY: usize = std::mem::size_of::<FlowKey>();
const VALUE: usize = std::mem::size_of::<FlowValue>();
const ENTRY: usize = KEY + VALUE + 4 * 8;

fn encode(kind: u32, h: &Header, upserts: &[FlowEntry], removes: &[FlowKey]) -> Vec<u8> {
    let mut p = Vec::with_capacity(256 + upserts.len() * ENTRY + removes.len() * KEY);
    for id in h.identity {
        p.extend_from_slice(&id.to_le_bytes());
    }
    p.extend_from_slice(&h.seq.to_le_bytes());
    p.extend_from_slice(&h.active_after.to_le_bytes());
    p.extend_from_slice(&h.last_flip_ns.to_le_bytes());
    p.extend_from_slice(&h.records_len.unwrap_or(u64::MAX).to_le_bytes());
    let t = &h.table;
    p.extend_from_slice(&t.evictions.to_le_bytes());
    p.extend_from_slice(&(t.records.len() as u32).to_le_bytes());
    for r in &t.records {
        p.extend_from_slice(&r.to_le_bytes());
    }
    p.push(u8::from(t.mono_to_unix.is_some()));
    p.extend_from_slice(&t.mono_to_unix.unwrap_or(0).to_le_bytes());
    p.extend_from_slice(&(t.ifaces.len() as u32).to_le_bytes());
    for (ifindex, name) in &t.ifaces {
        p.extend_from_slice(&ifindex.to_le_bytes());
        p.extend_from_slice(&(name.len() as u32).to_le_bytes());
        p.extend_from_slice(name.as_bytes());
    }
    p.extend_from_slice(&(upserts.len() as u64).to_le_bytes());
    for e in upserts {
        p.extend_from_slice(pod_bytes(&e.key));
        p.extend_from_slice(pod_bytes(&e.value));
        for n in [
            e.total_packets,
            e.total_bytes,
            e.first_seen_ns,
            e.last_seen_ns,
        ] {
            p.extend_from_slice(&n.to_le_bytes());
        }
    }
    p.extend_from_slice(&(removes.len() as u64).to_le_bytes());
    for k in removes {
        p.extend_from_slice(pod_bytes(k));
    }
    let mut frame = Vec::with_capacity(p.len() + FRAME_OVERHEAD as usize);
    frame.extend_from_slice(&MAGIC.to_le_bytes());
    frame.extend_from_slice(&kind.to_le_bytes());
    frame.extend_from_slice(&(p.len() as u64).to_le_bytes());
    frame.extend_from_slice(&p);
    frame.extend_from_slice(&fnv1a(&p).to_le_bytes());
    frame
}

/// A little-endian reader that fails softly (`None`) past the end.
struct Cursor<'a> {
    b: &'a [u8],
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.b.len() < n {
            return None;
        }
        let (head, tail) = self.b.split_at(n);
        self.b = tail;
        Some(head)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u32(&mut self) -> Option<u32> {
        self.take(4)
            .map(|b| u32::from_le_bytes(b.try_into().unwrap_or_default()))
    }
    fn u64(&mut self) -> Option<u64> {
        self.take(8)
            .map(|b| u64::from_le_bytes(b.try_into().unwrap_or_default()))
    }
    fn i128(&mut self) -> Option<i128> {
        self.take(16)
            .map(|b| i128::from_le_bytes(b.try_into().unwrap_or_default()))
    }
}

struct Decoded {
    header: Header,
    upserts: Vec<FlowEntry>,
    removes: Vec<FlowKey>,
}

fn decode(payload: &[u8]) -> Option<Decoded> {
    let mut c = Cursor { b: payload };
    let identity = [c.u32()?, c.u32()?, c.u32()?];
    let seq = c.u64()?;
    let active_after = c.u32()?;
    let last_flip_ns = c.u64()?;
    let records_len = Some(c.u64()?).filter(|&n| n != u64::MAX);
    let evictions = c.u64()?;
    let nrec = c.u32()? as usize;
    let mut records = Vec::with_capacity(nrec.min(16));
    for _ in 0..nrec {
        records.push(c.u64()?);
    }
    let has_offset = c.u8()? != 0;
    let offset = c.i128()?;
    let nif = c.u32()? as usize;
    let mut ifaces = Vec::with_capacity(nif.min(1024));
    for _ in 0..nif {
        let ifindex = c.u32()?;
        let len = c.u32()? as usize;
        let name = String::from_utf8(c.take(len)?.to_vec()).ok()?;
        ifaces.push((ifindex, name));
    }
    let nup = c.u64()? as usize;
    let mut upserts = Vec::with_capacity(nup.min(payload.len() / ENTRY + 1));
    for _ in 0..nup {
        let key = pod_from::<FlowKey>(c.take(KEY)?);
        let value = pod_from::<FlowValue>(c.take(VALUE)?);
        upserts.push(FlowEntry {
            key,
            value,
            total_packets: c.u64()?,
            total_bytes: c.u64()?,
            first_seen_ns: c.u64()?,
            last_seen_ns: c.u64()?,
        });
    }
    let nrm = c.u64()? as usize;
    let mut removes = Vec::with_capacity(nrm.min(payload.len() / KEY + 1));
    for _ in 0..nrm {
        removes.push(pod_from::<FlowKey>(c.take(KEY)?));
    }
    if !c.b.is_empty() {
        return None;
    }
    Some(Decoded {
        header: Header {
            identity,
            seq,
            active_after,
            last_flip_ns,
            records_len,
            table: TableMeta {
                evictions,
                records,
                mono_to_unix: has_offset.then_some(offset),
                ifaces,
            },
        },
        upserts,
        removes,
    })
}

/// Replays frames until the end or the first bad one. Returns the state,
/// the length of the good prefix and the size of the last full frame.
fn replay(bytes: &[u8]) -> (Option<Recovered>, u64, u64) {
    use std::collections::HashMap;
    let mut table: HashMap<FlowKey, FlowEntry> = HashMap::new();
    let mut header = None;
    let mut pos = 0usize;
    let mut frames = 0u64;
    let mut last_full = 0u64;
    loop {
        let rest = &bytes[pos..];
        let mut c = Cursor { b: rest };
        let parsed = (|| {
            let magic = c.u32()?;
            let kind = c.u32()?;
            let len = usize::try_from(c.u64()?).ok()?;
            let payload = c.take(len)?;
            let sum = c.u64()?;
            (magic == MAGIC && (kind == KIND_FULL || kind == KIND_DELTA) && sum == fnv1a(payload))
                .then_some((kind, payload, len + FRAME_OVERHEAD as usize))
        })();
        let Some((kind, payload, size)) = parsed else {
            break;
        };
        let Some(d) = decode(payload) else {
            break;
        };
        if kind == KIND_FULL {
            table.clear();
            last_full = size as u64;
        } else if frames == 0 {
            // A journal must start with a full frame.
            break;
        }
        for e in d.upserts {
            table.insert(e.key, e);
        }
        for k in d.removes {
            table.remove(&k);
        }
        header = Some(d.header);
        frames += 1;
        pos += size;
    }
    let torn = (bytes.len() - pos) as u64;
    let recovered = header.map(|header| Recovered {
        header,
        entries: table.into_values().collect(),
        frames,
        torn_bytes: torn,
    });
    (recovered, pos as u64, last_full)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(n: u8, packets: u64) -> FlowEntry {
        let key = FlowKey {
            src_port: u16::from(n),
            ifindex: 3,
            ..FlowKey::default()
        };
        FlowEntry {
            key,
            value: FlowValue {
                packets,
                bytes: packets * 100,
                first_seen_ns: 10,
                last_seen_ns: 20 + u64::from(n),
                ..FlowValue::default()
            },
            total_packets: packets,
            total_bytes: packets * 100,
            first_seen_ns: 10,
            last_seen_ns: 20 + u64::from(n),
        }
    }

    fn header(seq: u64) -> Header {
        Header {
            identity: [1, 2, 3],
            seq,
            active_after: (seq % 2) as u32,
            last_flip_ns: seq * 1000,
            records_len: Some(seq * 10),
            table: TableMeta {
                evictions: seq,
                records: vec![1, 2, 3, 4],
                mono_to_unix: Some(-5),
                ifaces: vec![(3, "eth0".into())],
            },
        }
    }

    fn sorted(mut v: Vec<FlowEntry>) -> Vec<FlowEntry> {
        v.sort_by_key(|e| e.key.src_port);
        v
    }

    #[test]
    fn replay_applies_full_then_delta_frames() {
        let dir = tempdir();
        let (mut j, r) = Journal::open(&dir, [1, 2, 3]).unwrap();
        assert!(r.is_none());
        j.commit(&header(1), &[entry(1, 5)], &[], || vec![entry(1, 5)])
            .unwrap();
        j.commit(&header(2), &[entry(2, 7), entry(1, 6)], &[], Vec::new)
            .unwrap();
        j.commit(&header(3), &[entry(3, 1)], &[entry(2, 0).key], Vec::new)
            .unwrap();
        drop(j);
        let (_, r) = Journal::open(&dir, [1, 2, 3]).unwrap();
        let r = r.unwrap();
        assert_eq!(r.header, header(3));
        assert_eq!(r.frames, 3);
        assert_eq!(r.torn_bytes, 0);
        assert_eq!(sorted(r.entries), vec![entry(1, 6), entry(3, 1)]);
    }

    #[test]
    fn a_torn_tail_is_cut_at_the_last_good_frame() {
        let dir = tempdir();
        let (mut j, _) = Journal::open(&dir, [1, 2, 3]).unwrap();
        j.commit(&header(1), &[entry(1, 5)], &[], || vec![entry(1, 5)])
            .unwrap();
        let good = j.len();
        j.commit(&header(2), &[entry(2, 7)], &[], Vec::new).unwrap();
        let full = j.len();
        drop(j);
        let path = dir.join(FILE_NAME);
        // Every cut inside the second frame recovers the first one only.
        for cut in [good + 1, good + 20, full - 1] {
            let bytes = std::fs::read(&path).unwrap();
            std::fs::write(&path, &bytes[..cut as usize]).unwrap();
            let (j, r) = Journal::open(&dir, [1, 2, 3]).unwrap();
            let r = r.unwrap();
            assert_eq!((r.header.seq, r.torn_bytes), (1, cut - good));
            assert_eq!(j.len(), good);
            // Restore the full file for the next cut.
            std::fs::write(&path, &bytes).unwrap();
        }
        // A flipped bit in the payload fails the checksum.
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[good as usize + 30] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        let (_, r) = Journal::open(&dir, [1, 2, 3]).unwrap();
        assert_eq!(r.unwrap().header.seq, 1);
    }

    #[test]
    fn a_journal_of_other_maps_is_discarded() {
        let dir = tempdir();
        let (mut j, _) = Journal::open(&dir, [1, 2, 3]).unwrap();
        j.commit(&header(1), &[entry(1, 5)], &[], || vec![entry(1, 5)])
            .unwrap();
        drop(j);
        let (j, r) = Journal::open(&dir, [7, 8, 9]).unwrap();
        assert!(r.is_none());
        assert!(j.is_empty());
    }

    #[test]
    fn compaction_rewrites_one_full_frame() {
        let dir = tempdir();
        let (mut j, _) = Journal::open(&dir, [1, 2, 3]).unwrap();
        j.commit(&header(1), &[entry(1, 5)], &[], || vec![entry(1, 5)])
            .unwrap();
        let big: Vec<FlowEntry> = (0..=255).map(|n| entry(n, 1)).collect();
        let mut seq = 2;
        while j.len() <= COMPACT_MIN {
            j.commit(&header(seq), &big, &[], Vec::new).unwrap();
            seq += 1;
        }
        j.commit(&header(seq), &[], &[], || vec![entry(9, 9)])
            .unwrap();
        assert!(j.len() < 1024, "compacted to {} bytes", j.len());
        drop(j);
        let (_, r) = Journal::open(&dir, [1, 2, 3]).unwrap();
        let r = r.unwrap();
        assert_eq!((r.header.seq, r.frames), (seq, 1));
        assert_eq!(r.entries, vec![entry(9, 9)]);
    }

    fn tempdir() -> PathBuf {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "sensor-journal-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }
}
