//! A small safe wrapper over the `bpf(2)` calls aya 0.14 lacks.
//!
//! - [`lookup_and_delete_batch`]: `BPF_MAP_LOOKUP_AND_DELETE_BATCH` (kernel
//!   5.6+), which reads a per-CPU hash map in bulk at about 0.5 us per entry
//!   on the 2-vCPU machines measured here, against 3.5-4.5 us with
//!   `get_next_key` + lookup + delete per key; [`lookup_and_delete_batch_range`]
//!   reads a range of buckets, so threads can share one map.
//! - [`lookup_batch`] and [`delete_batch`]: `BPF_MAP_LOOKUP_BATCH` and
//!   `BPF_MAP_DELETE_BATCH`, for persistent mode's two-phase drain (read,
//!   journal, then delete).
//! - [`link_ifindex`]: the interface of an XDP or TCX link
//!   (`BPF_OBJ_GET_INFO_BY_FD`), to tell whether a pinned link still holds
//!   its device.
//! - [`RcuBarrier`]: waits until every program run that started before the
//!   call has finished. It updates a one-slot `ARRAY_OF_MAPS` it owns: the
//!   kernel answers every update of a map-in-map with `synchronize_rcu()`
//!   (`maybe_wait_bpf_programs` in kernel/bpf/syscall.c) precisely so that
//!   userspace knows no program still uses the old value. XDP and TC programs
//!   run inside RCU read-side sections, so after the barrier no run that read
//!   the old buffer flag is still writing.
//!
//! Every attribute block is a zeroed, 8-byte aligned buffer with the fields
//! written at their documented offsets (`union bpf_attr` in
//! include/uapi/linux/bpf.h); the kernel rejects non-zero unknown bytes.

use std::{
    io,
    os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd},
};

const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_OBJ_GET: libc::c_long = 7;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;
const BPF_MAP_LOOKUP_AND_DELETE_BATCH: libc::c_long = 25;
const BPF_MAP_DELETE_BATCH: libc::c_long = 27;

const BPF_MAP_TYPE_ARRAY: u32 = 2;
const BPF_MAP_TYPE_ARRAY_OF_MAPS: u32 = 12;

/// Size of the attribute buffer we pass (covers every command used here).
const ATTR_WORDS: usize = 18;

#[repr(C, align(8))]
struct Attr([u32; ATTR_WORDS * 2]);

impl Attr {
    fn new() -> Self {
        Attr([0; ATTR_WORDS * 2])
    }
    fn set_u32(&mut self, byte_off: usize, v: u32) {
        self.0[byte_off / 4] = v;
    }
    fn set_u64(&mut self, byte_off: usize, v: u64) {
        self.0[byte_off / 4] = v as u32;
        self.0[byte_off / 4 + 1] = (v >> 32) as u32;
    }
    fn get_u32(&self, byte_off: usize) -> u32 {
        self.0[byte_off / 4]
    }
}

/// Issues one `bpf(2)` command.
///
/// # Safety
/// Every pointer stored in `attr` must be valid for the access the command
/// makes (sizes as the map was created with).
unsafe fn sys_bpf(cmd: libc::c_long, attr: &mut Attr) -> io::Result<libc::c_long> {
    // SAFETY: `attr` is a live, zero-padded buffer of the size we pass; the
    // caller vouches for the pointers inside it.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut Attr,
            std::mem::size_of::<Attr>() as libc::c_uint,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn create_map(
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    inner_fd: Option<RawFd>,
) -> io::Result<OwnedFd> {
    let mut a = Attr::new();
    a.set_u32(0, map_type);
    a.set_u32(4, key_size);
    a.set_u32(8, value_size);
    a.set_u32(12, max_entries);
    if let Some(fd) = inner_fd {
        a.set_u32(20, fd as u32);
    }
    // SAFETY: MAP_CREATE reads no pointers from this attr.
    let fd = unsafe { sys_bpf(BPF_MAP_CREATE, &mut a)? };
    // SAFETY: the kernel returned a new file descriptor that we now own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Waits for every in-flight BPF program run to finish (see module docs).
#[derive(Debug)]
pub struct RcuBarrier {
    outer: OwnedFd,
    inner: OwnedFd,
}

impl RcuBarrier {
    /// Creates the two tiny maps the barrier needs.
    pub fn new() -> io::Result<Self> {
        let inner = create_map(BPF_MAP_TYPE_ARRAY, 4, 4, 1, None)?;
        let outer = create_map(BPF_MAP_TYPE_ARRAY_OF_MAPS, 4, 4, 1, Some(inner.as_raw_fd()))?;
        Ok(RcuBarrier { outer, inner })
    }

    /// Returns once an RCU grace period has elapsed (typically a few ms).
    pub fn wait(&self) -> io::Result<()> {
        let key: u32 = 0;
        let value: u32 = self.inner.as_raw_fd() as u32;
        let mut a = Attr::new();
        a.set_u32(0, self.outer.as_raw_fd() as u32);
        a.set_u64(8, &key as *const u32 as u64);
        a.set_u64(16, &value as *const u32 as u64);
        // SAFETY: key and value are 4-byte locals, the sizes of the map.
        unsafe { sys_bpf(BPF_MAP_UPDATE_ELEM, &mut a)? };
        Ok(())
    }
}

/// Reads and deletes every entry of a hash map in batches.
///
/// `key_size` and `value_size` must be the map's; for a per-CPU map
/// `value_size` is the per-entry size the kernel copies out:
/// `round_up(value, 8) * possible_cpus`. `sink` receives each batch as
/// parallel slices of raw keys and values. Returns the number of entries.
///
/// Only safe against loss when nothing writes the map meanwhile (the drain
/// reads the retired buffer after an [`RcuBarrier`]).
pub fn lookup_and_delete_batch(
    map: BorrowedFd<'_>,
    key_size: usize,
    value_size: usize,
    batch: u32,
    sink: impl FnMut(&[u8], &[u8]),
) -> io::Result<u64> {
    lookup_and_delete_batch_range(map, key_size, value_size, batch, 0..u32::MAX, sink)
}

/// [`lookup_and_delete_batch`] over the buckets `buckets` of a hash map
/// only (a batch may run a few buckets past the end). Disjoint ranges can
/// be read by concurrent threads: the kernel reads and deletes a bucket's
/// entries under its lock, so an entry is read by whichever thread reaches
/// its bucket first, and only once.
pub fn lookup_and_delete_batch_range(
    map: BorrowedFd<'_>,
    key_size: usize,
    value_size: usize,
    batch: u32,
    buckets: std::ops::Range<u32>,
    sink: impl FnMut(&[u8], &[u8]),
) -> io::Result<u64> {
    read_batches(
        BPF_MAP_LOOKUP_AND_DELETE_BATCH,
        map,
        key_size,
        value_size,
        batch,
        buckets,
        sink,
    )
}

/// Reads every entry of a hash map in batches, leaving the map as it is.
/// Same contract as [`lookup_and_delete_batch`].
pub fn lookup_batch(
    map: BorrowedFd<'_>,
    key_size: usize,
    value_size: usize,
    batch: u32,
    sink: impl FnMut(&[u8], &[u8]),
) -> io::Result<u64> {
    read_batches(
        BPF_MAP_LOOKUP_BATCH,
        map,
        key_size,
        value_size,
        batch,
        0..u32::MAX,
        sink,
    )
}

/// Deletes the keys packed in `keys` (each `key_size` bytes). Keys already
/// gone are skipped one by one, so a partly deleted set can be deleted
/// again. Returns how many were deleted.
pub fn delete_batch(map: BorrowedFd<'_>, key_size: usize, keys: &[u8]) -> io::Result<u64> {
    let mut deleted = 0u64;
    let mut rest = keys;
    while rest.len() >= key_size {
        let count = (rest.len() / key_size).min(u32::MAX as usize) as u32;
        let mut a = Attr::new();
        a.set_u64(16, rest.as_ptr() as u64);
        a.set_u32(32, count);
        a.set_u32(36, map.as_raw_fd() as u32);
        // SAFETY: `rest` holds `count` keys of the map's key size; the
        // kernel only reads them.
        let r = unsafe { sys_bpf(BPF_MAP_DELETE_BATCH, &mut a) };
        let n = (a.get_u32(32) as usize).min(count as usize);
        deleted += n as u64;
        match r {
            Ok(_) => return Ok(deleted),
            // Key `n` is missing: skip it and carry on after it.
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                rest = &rest[((n + 1) * key_size).min(rest.len())..];
            }
            Err(e) => return Err(e),
        }
    }
    Ok(deleted)
}

/// The interface index an XDP or TCX link is attached to; 0 once its
/// device is gone (the link stays, defunct, while something holds it).
pub fn link_ifindex(link: BorrowedFd<'_>) -> io::Result<u32> {
    // struct bpf_link_info: type, id, prog_id, then a union 8-aligned at
    // offset 16 whose xdp and tcx members both start with the ifindex.
    let mut info = [0u64; 12];
    let mut a = Attr::new();
    a.set_u32(0, link.as_raw_fd() as u32);
    a.set_u32(4, std::mem::size_of_val(&info) as u32);
    a.set_u64(8, info.as_mut_ptr() as u64);
    // SAFETY: `info` is a writable buffer of the length given.
    unsafe { sys_bpf(BPF_OBJ_GET_INFO_BY_FD, &mut a)? };
    Ok(info[2] as u32)
}

/// Opens a pinned object (`BPF_OBJ_GET`).
pub fn obj_get(path: &std::path::Path) -> io::Result<OwnedFd> {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL byte in pin path"))?;
    let mut a = Attr::new();
    a.set_u64(0, c.as_ptr() as u64);
    // SAFETY: the path is a live NUL-terminated string; the kernel reads it.
    let fd = unsafe { sys_bpf(BPF_OBJ_GET, &mut a)? };
    // SAFETY: the kernel returned a new file descriptor that we now own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

fn read_batches(
    cmd: libc::c_long,
    map: BorrowedFd<'_>,
    key_size: usize,
    value_size: usize,
    batch: u32,
    buckets: std::ops::Range<u32>,
    mut sink: impl FnMut(&[u8], &[u8]),
) -> io::Result<u64> {
    let mut batch = batch.max(1);
    let mut keys = vec![0u8; key_size * batch as usize];
    let mut values = vec![0u8; value_size * batch as usize];
    // The hash map's cursor is the next bucket index (a u32).
    let mut in_token = [u64::from(buckets.start)];
    let mut out_token = [0u64; 1];
    let mut first = buckets.start == 0;
    let mut total = 0u64;
    loop {
        let mut a = Attr::new();
        if !first {
            a.set_u64(0, in_token.as_mut_ptr() as u64);
        }
        a.set_u64(8, out_token.as_mut_ptr() as u64);
        a.set_u64(16, keys.as_mut_ptr() as u64);
        a.set_u64(24, values.as_mut_ptr() as u64);
        a.set_u32(32, batch);
        a.set_u32(36, map.as_raw_fd() as u32);
        // SAFETY: the key and value buffers hold `batch` entries of the
        // map's sizes; the tokens are 8 bytes, more than the kernel's u32
        // bucket cursor for hash maps.
        let r = unsafe { sys_bpf(cmd, &mut a) };
        let n = a.get_u32(32) as usize;
        let done = match r {
            Ok(_) => false,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => true,
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) && n == 0 => {
                // One bucket holds more entries than the buffer: grow it.
                batch = batch.saturating_mul(2);
                keys.resize(key_size * batch as usize, 0);
                values.resize(value_size * batch as usize, 0);
                continue;
            }
            Err(e) => return Err(e),
        };
        if n > 0 {
            sink(&keys[..n * key_size], &values[..n * value_size]);
            total += n as u64;
        }
        if done || out_token[0] >= u64::from(buckets.end) {
            return Ok(total);
        }
        in_token = out_token;
        first = false;
    }
}

/// Number of possible CPUs (`/sys/devices/system/cpu/possible`): the number
/// of slots of every per-CPU value.
pub fn possible_cpus() -> io::Result<usize> {
    let text = std::fs::read_to_string("/sys/devices/system/cpu/possible")?;
    parse_cpu_list(text.trim()).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("cannot parse possible CPU list {text:?}"),
        )
    })
}

fn parse_cpu_list(s: &str) -> Option<usize> {
    let mut max = None;
    for part in s.split(',') {
        let last = part.rsplit('-').next()?.trim().parse::<usize>().ok()?;
        max = Some(max.map_or(last, |m: usize| m.max(last)));
    }
    max.map(|m| m + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists() {
        assert_eq!(parse_cpu_list("0"), Some(1));
        assert_eq!(parse_cpu_list("0-1"), Some(2));
        assert_eq!(parse_cpu_list("0-3,8-11"), Some(12));
        assert_eq!(parse_cpu_list("x"), None);
    }
}
