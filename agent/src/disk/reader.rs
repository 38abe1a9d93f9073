//! Block access: one reader over a disk image file or a block device.
//!
//! [`Disk`] opens the file read-only, learns its size (file length, or `BLKGETSIZE64` for a block
//! device) and serves positioned reads through a small page cache of 4 KiB aligned pages, so every
//! read the device sees is sector aligned whatever the logical sector size, and repeated reads of
//! the same metadata block cost nothing. It counts the bytes it actually read from the device.
//!
//! [`Volume`] is a window over a [`Disk`] (a partition, or the whole disk). Every parser gets a
//! `Volume`, never the `Disk`: a read that would leave the window fails, so no parser can read
//! outside its volume. A `Volume` also carries a [`Budget`] (a cap on the bytes it may request and
//! a cancellation flag), which is how runaway parsers are stopped: once the budget is spent or the
//! flag is set, every further read fails and the parser unwinds with an error.
//!
//! A [`Disk`] can also be *mapped* ([`Disk::mapped`]): its bytes are ranges of other disks, laid
//! out linearly or striped, which is how a logical volume (LVM, without device-mapper) becomes a
//! disk that the native parsers read through an ordinary [`Volume`]. A mapped disk has no cache
//! of its own and counts no bytes itself: each piece of a read goes to the disk it maps onto,
//! whose cache serves it and whose [`Disk::bytes_read`] counts it.
//!
//! An image *file* in a VM image format (qcow2, VMDK, VHD, VHDX, the GCE tarball) is decoded
//! through [`super::image`]: the disk is then the virtual disk the image describes, and
//! [`Disk::bytes_read`] counts the decoded bytes read. A block device is always raw.
//!
//! It does not write, ever: the file is opened with `O_RDONLY` and nothing here has a write path.

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::{FileExt, FileTypeExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};

use super::image::{self, Format};
use super::ioctl;

/// Size of a cache page, and the alignment of every read sent to the device.
const PAGE: u64 = 4096;
/// Pages kept in the cache (8 MiB).
const CACHE_PAGES: usize = 2048;
/// Requests spanning more pages than this bypass the cache (one aligned read instead).
const DIRECT_PAGES: u64 = 64;

/// Positioned, exact reads over something with a known size.
///
/// Implemented by [`Volume`] for real disks and by byte slices for tests and fuzzing.
pub trait ReadAt {
    /// Size in bytes.
    fn size(&self) -> u64;
    /// Fill `buf` from `offset`; fails if the range is not wholly inside the object.
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()>;
}

impl ReadAt for [u8] {
    fn size(&self) -> u64 {
        u64::try_from(self.len()).unwrap_or(u64::MAX)
    }

    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let src = usize::try_from(offset)
            .ok()
            .and_then(|start| self.get(start..start.checked_add(buf.len())?))
            .ok_or_else(|| out_of_range(offset, buf.len(), self.size()))?;
        buf.copy_from_slice(src);
        Ok(())
    }
}

impl ReadAt for Vec<u8> {
    fn size(&self) -> u64 {
        self.as_slice().size()
    }

    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.as_slice().read_exact_at(offset, buf)
    }
}

fn out_of_range(offset: u64, len: usize, size: u64) -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        format!("read of {len} bytes at offset {offset:#x} is outside the {size}-byte object"),
    )
}

/// Read `len` bytes at `offset` into a new vector.
pub fn read_vec(r: &(impl ReadAt + ?Sized), offset: u64, len: usize) -> io::Result<Vec<u8>> {
    let mut buf = vec![0; len];
    r.read_exact_at(offset, &mut buf)?;
    Ok(buf)
}

/// An opened disk image file or block device (or, for tests and fuzzing, bytes in memory).
#[derive(Debug)]
pub struct Disk {
    source: Source,
    path: PathBuf,
    size: u64,
    logical_sector_size: u32,
    format: Format,
    bytes_read: AtomicU64,
    cache: Mutex<PageCache>,
}

#[derive(Debug)]
enum Source {
    File(File),
    /// A decoded VM image file.
    Image(Box<dyn image::Image>),
    Memory(Vec<u8>),
    /// Sorted, contiguous from 0, each one checked against its target disks.
    Mapped(Vec<MappedExtent>),
}

/// A range of a mapped disk ([`Disk::mapped`]): `len` bytes from `start`, stored as `layout`
/// says.
#[derive(Debug, Clone)]
pub struct MappedExtent {
    /// Offset in the mapped disk.
    pub start: u64,
    /// Length in bytes.
    pub len: u64,
    /// Where the bytes are.
    pub layout: Layout,
}

/// Where the bytes of a [`MappedExtent`] are.
#[derive(Debug, Clone)]
pub enum Layout {
    /// Contiguous bytes of `disk` from `offset`.
    Linear {
        /// The disk holding them.
        disk: Arc<Disk>,
        /// Their offset on it.
        offset: u64,
    },
    /// RAID 0: the extent is cut into chunks of `chunk` bytes that go to the stripes in turn;
    /// each stripe (a disk and an offset on it) holds `len / stripes.len()` bytes.
    Striped {
        /// Chunk size in bytes.
        chunk: u64,
        /// The stripes in order.
        stripes: Vec<(Arc<Disk>, u64)>,
    },
}

impl MappedExtent {
    /// Check the extent against its target disks; the error says what is wrong.
    fn check(&self) -> Result<(), String> {
        let fits = |disk: &Disk, offset: u64, len: u64| {
            offset
                .checked_add(len)
                .is_some_and(|end| end <= disk.size())
        };
        match &self.layout {
            Layout::Linear { disk, offset } => {
                if !fits(disk, *offset, self.len) {
                    return Err(format!(
                        "{} bytes at {offset:#x} do not fit '{}'",
                        self.len,
                        disk.path().display()
                    ));
                }
            }
            Layout::Striped { chunk, stripes } => {
                let n = u64::try_from(stripes.len()).unwrap_or(0);
                let row = chunk.checked_mul(n).filter(|&r| r > 0);
                let Some(per) = row
                    .filter(|&r| self.len.is_multiple_of(r))
                    .map(|_| self.len / n)
                else {
                    return Err(format!(
                        "{} bytes are not whole rows of {} stripes of {chunk} bytes",
                        self.len,
                        stripes.len()
                    ));
                };
                for (disk, offset) in stripes {
                    if !fits(disk, *offset, per) {
                        return Err(format!(
                            "stripe of {per} bytes at {offset:#x} does not fit '{}'",
                            disk.path().display()
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// Read `buf.len()` bytes at `offset` from the start of this extent (the caller keeps the
    /// range inside it).
    fn read(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        match &self.layout {
            Layout::Linear { disk, offset: base } => {
                disk.read_exact_at(base.saturating_add(offset), buf)
            }
            Layout::Striped { chunk, stripes } => {
                let n = u64::try_from(stripes.len()).unwrap_or(1).max(1);
                let chunk = (*chunk).max(1);
                let mut done = 0usize;
                while done < buf.len() {
                    let at = offset.saturating_add(u64::try_from(done).unwrap_or(u64::MAX));
                    let index = at / chunk;
                    let within = at % chunk;
                    let (disk, base) = usize::try_from(index % n)
                        .ok()
                        .and_then(|s| stripes.get(s))
                        .ok_or_else(|| io::Error::other("stripe index out of range"))?;
                    let phys = base
                        .saturating_add((index / n).saturating_mul(chunk))
                        .saturating_add(within);
                    let take = usize::try_from(chunk.saturating_sub(within))
                        .unwrap_or(usize::MAX)
                        .min(buf.len().saturating_sub(done));
                    let dst = buf
                        .get_mut(done..done.saturating_add(take))
                        .ok_or_else(|| io::Error::other("stripe piece out of range"))?;
                    disk.read_exact_at(phys, dst)?;
                    done = done.saturating_add(take);
                }
                Ok(())
            }
        }
    }
}

#[derive(Debug, Default)]
struct PageCache {
    pages: HashMap<u64, Arc<[u8]>>,
    order: VecDeque<u64>,
}

/// Check that `path` can be read as a disk before anything is done with it: it exists, is a
/// regular file that is not empty or a block device, and can be opened for reading. The errors
/// name `path` as the user gave it, the same whoever runs the check (root reads through a loop
/// device later, a user directly: both fail here first, alike).
///
/// # Errors
///
/// Why `path` is not a readable disk: `'adir' is a directory, not a disk image`.
pub fn check_source(path: &Path) -> Result<()> {
    use std::io::ErrorKind;
    let p = path.display();
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == ErrorKind::NotFound => anyhow::bail!("'{p}' does not exist"),
        Err(e) => return Err(e).with_context(|| format!("cannot open '{p}'")),
    };
    if meta.is_dir() {
        anyhow::bail!("'{p}' is a directory, not a disk image");
    }
    if !meta.is_file() && !meta.file_type().is_block_device() {
        anyhow::bail!("'{p}' is neither a disk image file nor a block device");
    }
    if meta.is_file() && meta.len() == 0 {
        anyhow::bail!("'{p}' is empty, not a disk image");
    }
    File::open(path)
        .map(drop)
        .with_context(|| format!("cannot open '{p}'"))
}

impl Disk {
    /// Open `path` read-only. A block device's size comes from `BLKGETSIZE64`, a raw file's from
    /// its length; a file in a VM image format is decoded with the default
    /// [`image::Options`] (backing files from the image's own directory).
    pub fn open(path: &Path) -> Result<Arc<Disk>> {
        check_source(path)?;
        let file = File::open(path).with_context(|| format!("cannot open '{}'", path.display()))?;
        let meta = file
            .metadata()
            .with_context(|| format!("failed to stat '{}'", path.display()))?;
        let (size, logical_sector_size) = if meta.file_type().is_block_device() {
            let size = ioctl::block_device_size(&file)
                .with_context(|| format!("failed to get the size of '{}'", path.display()))?;
            let sector = ioctl::logical_sector_size(&file).unwrap_or(512);
            (size, sector)
        } else if meta.is_file() {
            let format = image::detect(&file, meta.len())
                .with_context(|| format!("cannot read '{}'", path.display()))?;
            if format != Format::Raw {
                let opened =
                    image::open(path, file, meta.len(), format, &image::Options::default())
                        .with_context(|| format!("cannot open '{}'", path.display()))?;
                return Ok(Arc::new(Disk {
                    size: opened.size,
                    source: Source::Image(opened.image),
                    path: path.to_owned(),
                    logical_sector_size: 512,
                    format,
                    bytes_read: AtomicU64::new(0),
                    cache: Mutex::new(PageCache::default()),
                }));
            }
            (meta.len(), 512)
        } else {
            anyhow::bail!(
                "'{}' is neither a disk image file nor a block device",
                path.display()
            );
        };
        Ok(Arc::new(Disk {
            source: Source::File(file),
            path: path.to_owned(),
            size,
            logical_sector_size,
            format: Format::Raw,
            bytes_read: AtomicU64::new(0),
            cache: Mutex::new(PageCache::default()),
        }))
    }

    /// A disk whose bytes are in memory (tests, fuzzing), shown as `name`.
    pub fn from_bytes(name: &str, bytes: Vec<u8>) -> Arc<Disk> {
        Arc::new(Disk {
            size: bytes.size(),
            source: Source::Memory(bytes),
            path: PathBuf::from(name),
            logical_sector_size: 512,
            format: Format::Raw,
            bytes_read: AtomicU64::new(0),
            cache: Mutex::new(PageCache::default()),
        })
    }

    /// A disk made of ranges of other disks (a logical volume), shown as `name`. `extents` must
    /// be contiguous from offset 0, non-empty each, and lie inside their target disks (for a
    /// striped extent, its length must be whole rows of chunks); anything else is refused with
    /// [`io::ErrorKind::InvalidInput`]. Reads that cross extents are split; see the module docs
    /// for caching and counting.
    pub fn mapped(name: &str, extents: Vec<MappedExtent>) -> io::Result<Arc<Disk>> {
        let invalid = |msg: String| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("mapped disk {name}: {msg}"),
            )
        };
        let mut size = 0u64;
        for e in &extents {
            if e.start != size || e.len == 0 {
                return Err(invalid(format!(
                    "extent at {:#x} of {} bytes leaves a gap or overlaps at {size:#x}",
                    e.start, e.len
                )));
            }
            e.check().map_err(invalid)?;
            size = size
                .checked_add(e.len)
                .ok_or_else(|| invalid("size overflows".into()))?;
        }
        let logical_sector_size = extents
            .first()
            .map(|e| match &e.layout {
                Layout::Linear { disk, .. } => disk.logical_sector_size(),
                Layout::Striped { stripes, .. } => stripes
                    .first()
                    .map_or(512, |(d, _)| d.logical_sector_size()),
            })
            .unwrap_or(512);
        Ok(Arc::new(Disk {
            source: Source::Mapped(extents),
            path: PathBuf::from(name),
            size,
            logical_sector_size,
            format: Format::Raw,
            bytes_read: AtomicU64::new(0),
            cache: Mutex::new(PageCache::default()),
        }))
    }

    /// Serve a read of a mapped disk from the disks it maps onto.
    fn read_mapped(&self, extents: &[MappedExtent], offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let mut done = 0usize;
        while done < buf.len() {
            let at = offset.saturating_add(u64::try_from(done).unwrap_or(u64::MAX));
            // The extent holding `at`: the last one starting at or before it.
            let index = extents.partition_point(|e| e.start <= at).checked_sub(1);
            let extent = index
                .and_then(|i| extents.get(i))
                .filter(|e| at < e.start.saturating_add(e.len))
                .ok_or_else(|| out_of_range(at, buf.len().saturating_sub(done), self.size))?;
            let within = at.saturating_sub(extent.start);
            let take = usize::try_from(extent.len.saturating_sub(within))
                .unwrap_or(usize::MAX)
                .min(buf.len().saturating_sub(done));
            let dst = buf
                .get_mut(done..done.saturating_add(take))
                .ok_or_else(|| out_of_range(at, take, self.size))?;
            extent.read(within, dst).map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("{}: read at {at:#x}: {e}", self.path.display()),
                )
            })?;
            done = done.saturating_add(take);
        }
        Ok(())
    }

    /// The path this disk was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// What the file holds: [`Format::Raw`] for block devices, raw files and disks built in
    /// memory.
    pub fn format(&self) -> Format {
        self.format
    }

    /// The device's logical sector size (512 for image files).
    pub fn logical_sector_size(&self) -> u32 {
        self.logical_sector_size
    }

    /// Bytes read from the file or device so far (cache misses only; always 0 for a mapped
    /// disk, whose reads are counted by the disks it maps onto).
    pub fn bytes_read(&self) -> u64 {
        self.bytes_read.load(Ordering::Relaxed)
    }

    /// A window of `len` bytes from `start`, with its own read budget.
    pub fn volume(self: &Arc<Self>, start: u64, len: u64, budget: Budget) -> io::Result<Volume> {
        match start.checked_add(len) {
            Some(end) if end <= self.size => Ok(Volume {
                disk: Arc::clone(self),
                start,
                len,
                pos: 0,
                budget,
            }),
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "volume at {start:#x} of {len} bytes does not fit in the {}-byte disk",
                    self.size
                ),
            )),
        }
    }

    /// Read from the device without the cache, aligned to pages, counting the bytes.
    fn read_aligned(&self, first_page: u64, pages: u64) -> io::Result<Vec<u8>> {
        let start = first_page.saturating_mul(PAGE);
        let end = start
            .saturating_add(pages.saturating_mul(PAGE))
            .min(self.size);
        let len = usize::try_from(end.saturating_sub(start))
            .map_err(|_| io::Error::other("read too large for memory"))?;
        let mut buf = vec![0; len];
        let mut done = 0;
        while done < len {
            let at = start.saturating_add(u64::try_from(done).unwrap_or(u64::MAX));
            let dst = buf.get_mut(done..).unwrap_or_default();
            let n = match &self.source {
                Source::File(f) => f.read_at(dst, at),
                Source::Image(i) => {
                    let n = usize::try_from(self.size.saturating_sub(at))
                        .unwrap_or(usize::MAX)
                        .min(dst.len());
                    i.read_exact_at(at, dst.get_mut(..n).unwrap_or_default())
                        .map(|()| n)
                }
                Source::Memory(m) => {
                    let src = usize::try_from(at)
                        .ok()
                        .and_then(|a| m.get(a..))
                        .unwrap_or_default();
                    let n = src.len().min(dst.len());
                    dst.get_mut(..n)
                        .unwrap_or_default()
                        .copy_from_slice(src.get(..n).unwrap_or_default());
                    Ok(n)
                }
                Source::Mapped(extents) => {
                    let n = usize::try_from(self.size.saturating_sub(at))
                        .unwrap_or(usize::MAX)
                        .min(dst.len());
                    let dst = dst.get_mut(..n).unwrap_or_default();
                    self.read_mapped(extents, at, dst).map(|()| n)
                }
            }
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("{}: read at {at:#x}: {e}", self.path.display()),
                )
            })?;
            if n == 0 {
                return Err(out_of_range(at, len.saturating_sub(done), self.size));
            }
            done = done.saturating_add(n);
        }
        self.bytes_read
            .fetch_add(u64::try_from(len).unwrap_or(u64::MAX), Ordering::Relaxed);
        Ok(buf)
    }

    fn page(&self, index: u64) -> io::Result<Arc<[u8]>> {
        if let Some(p) = self.lock_cache().pages.get(&index) {
            return Ok(Arc::clone(p));
        }
        let data: Arc<[u8]> = self.read_aligned(index, 1)?.into();
        let mut cache = self.lock_cache();
        if cache.pages.len() >= CACHE_PAGES {
            if let Some(old) = cache.order.pop_front() {
                cache.pages.remove(&old);
            }
        }
        if cache.pages.insert(index, Arc::clone(&data)).is_none() {
            cache.order.push_back(index);
        }
        Ok(data)
    }

    fn lock_cache(&self) -> std::sync::MutexGuard<'_, PageCache> {
        // A panic while holding the lock leaves a consistent cache (plain inserts and removes).
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl ReadAt for Disk {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let len = u64::try_from(buf.len()).unwrap_or(u64::MAX);
        let end = offset
            .checked_add(len)
            .filter(|&end| end <= self.size)
            .ok_or_else(|| out_of_range(offset, buf.len(), self.size))?;
        if len == 0 {
            return Ok(());
        }
        if let Source::Mapped(extents) = &self.source {
            return self.read_mapped(extents, offset, buf);
        }
        let first = offset / PAGE;
        let last = end.saturating_sub(1) / PAGE;
        let pages = last.saturating_sub(first).saturating_add(1);
        if pages > DIRECT_PAGES {
            let data = self.read_aligned(first, pages)?;
            let skip = usize::try_from(offset % PAGE).unwrap_or(0);
            let src = data
                .get(skip..skip.saturating_add(buf.len()))
                .ok_or_else(|| out_of_range(offset, buf.len(), self.size))?;
            buf.copy_from_slice(src);
            return Ok(());
        }
        let total = buf.len();
        let mut filled = 0usize;
        for index in first..=last {
            let page = self.page(index)?;
            let page_start = index.saturating_mul(PAGE);
            let from = usize::try_from(offset.saturating_sub(page_start)).unwrap_or(0);
            let want = total.saturating_sub(filled);
            let src = page
                .get(from..page.len().min(from.saturating_add(want)))
                .ok_or_else(|| out_of_range(offset, buf.len(), self.size))?;
            let dst = buf
                .get_mut(filled..filled.saturating_add(src.len()))
                .ok_or_else(|| out_of_range(offset, total, self.size))?;
            dst.copy_from_slice(src);
            filled = filled.saturating_add(src.len());
        }
        if filled != buf.len() {
            return Err(out_of_range(offset, buf.len(), self.size));
        }
        Ok(())
    }
}

/// Limits on the reads of one volume: a byte budget and a cancellation flag, shared by all clones
/// of a [`Volume`] and by whoever supervises the parse.
#[derive(Debug, Clone)]
pub struct Budget {
    inner: Arc<BudgetInner>,
}

#[derive(Debug)]
struct BudgetInner {
    remaining: AtomicU64,
    cancelled: AtomicBool,
}

impl Budget {
    /// A budget allowing `bytes` bytes of reads.
    pub fn new(bytes: u64) -> Self {
        Budget {
            inner: Arc::new(BudgetInner {
                remaining: AtomicU64::new(bytes),
                cancelled: AtomicBool::new(false),
            }),
        }
    }

    /// Make every further read fail.
    pub fn cancel(&self) {
        self.inner.cancelled.store(true, Ordering::Relaxed);
    }

    /// Whether [`Budget::cancel`] was called.
    pub fn is_cancelled(&self) -> bool {
        self.inner.cancelled.load(Ordering::Relaxed)
    }

    fn spend(&self, bytes: u64) -> io::Result<()> {
        if self.is_cancelled() {
            return Err(io::Error::new(
                io::ErrorKind::Interrupted,
                "volume read cancelled",
            ));
        }
        self.inner
            .remaining
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |r| {
                r.checked_sub(bytes)
            })
            .map(|_| ())
            .map_err(|_| io::Error::other("volume read budget exhausted"))
    }
}

/// A window over a [`Disk`]: reads outside it fail. Cheap to clone; clones share the budget but
/// each has its own stream position (for [`Read`] + [`Seek`] users such as the `ntfs` crate).
#[derive(Debug, Clone)]
pub struct Volume {
    disk: Arc<Disk>,
    start: u64,
    len: u64,
    pos: u64,
    budget: Budget,
}

impl Volume {
    /// Offset of this volume on its disk.
    pub fn start(&self) -> u64 {
        self.start
    }

    /// The disk this volume is a window on.
    pub fn disk(&self) -> &Arc<Disk> {
        &self.disk
    }

    /// The same window with another budget (for a second, independent pass over the volume).
    pub fn with_budget(&self, budget: Budget) -> Volume {
        Volume {
            budget,
            pos: 0,
            ..self.clone()
        }
    }

    /// The budget governing this volume's reads.
    pub fn budget(&self) -> &Budget {
        &self.budget
    }

    /// A sub-window of this volume (same budget).
    pub fn slice(&self, start: u64, len: u64) -> io::Result<Volume> {
        match start.checked_add(len) {
            Some(end) if end <= self.len => Ok(Volume {
                disk: Arc::clone(&self.disk),
                start: self.start.saturating_add(start),
                len,
                pos: 0,
                budget: self.budget.clone(),
            }),
            _ => Err(out_of_range(
                start,
                usize::try_from(len).unwrap_or(usize::MAX),
                self.len,
            )),
        }
    }
}

impl ReadAt for Volume {
    fn size(&self) -> u64 {
        self.len
    }

    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let len = u64::try_from(buf.len()).unwrap_or(u64::MAX);
        if offset.checked_add(len).is_none_or(|end| end > self.len) {
            return Err(out_of_range(offset, buf.len(), self.len));
        }
        self.budget.spend(len)?;
        // Cannot overflow: start + len <= disk size, checked in `Disk::volume`.
        self.disk
            .read_exact_at(self.start.saturating_add(offset), buf)
    }
}

impl Read for Volume {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.len.saturating_sub(self.pos);
        let n = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let dst = buf.get_mut(..n).unwrap_or_default();
        self.read_exact_at(self.pos, dst)?;
        self.pos = self.pos.saturating_add(u64::try_from(n).unwrap_or(0));
        Ok(n)
    }
}

impl Seek for Volume {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        let new = match pos {
            SeekFrom::Start(p) => Some(p),
            SeekFrom::End(d) => self.len.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        self.pos = new.ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "seek before the start of the volume",
            )
        })?;
        Ok(self.pos)
    }
}

impl ext4_view::Ext4Read for Volume {
    fn read(
        &mut self,
        start_byte: u64,
        dst: &mut [u8],
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync + 'static>> {
        Ok(self.read_exact_at(start_byte, dst)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn disk_with(bytes: &[u8]) -> Arc<Disk> {
        Disk::from_bytes("test", bytes.to_vec())
    }

    #[test]
    fn opens_files_and_refuses_directories() {
        let path = std::env::temp_dir().join(format!("snapscan-reader-{}.img", std::process::id()));
        std::fs::File::create(&path)
            .and_then(|mut f| f.write_all(&[9u8; 5000]))
            .expect("write");
        let disk = Disk::open(&path).expect("open");
        let mut buf = [0u8; 10];
        disk.read_exact_at(4995, &mut buf[..5])
            .expect("read the tail");
        assert_eq!((disk.size(), disk.bytes_read()), (5000, 904));
        std::fs::remove_file(&path).expect("remove");
        assert!(
            Disk::open(&std::env::temp_dir()).is_err(),
            "a directory is not a disk"
        );
    }

    #[test]
    fn reads_across_pages_and_counts_aligned_bytes() {
        let bytes: Vec<u8> = (0..3 * PAGE + 100).map(|i| (i % 251) as u8).collect();
        let disk = disk_with(&bytes);
        let mut buf = vec![0; 5000];
        disk.read_exact_at(4000, &mut buf).expect("read");
        assert_eq!(buf, bytes[4000..9000]);
        assert_eq!(disk.bytes_read(), 3 * PAGE, "pages 0..=2 read once each");
        disk.read_exact_at(4100, &mut buf[..10])
            .expect("cached read");
        assert_eq!(
            disk.bytes_read(),
            3 * PAGE,
            "second read served from the cache"
        );
        // The partial last page.
        let mut tail = [0u8; 100];
        disk.read_exact_at(3 * PAGE, &mut tail).expect("tail");
        assert_eq!(tail[..], bytes[(3 * PAGE) as usize..]);
    }

    #[test]
    fn volume_window_is_enforced() {
        let bytes = vec![7u8; 8192];
        let disk = disk_with(&bytes);
        let vol = disk
            .volume(1024, 2048, Budget::new(u64::MAX))
            .expect("volume");
        let mut buf = [0u8; 16];
        assert!(vol.read_exact_at(2048 - 16, &mut buf).is_ok());
        assert!(
            vol.read_exact_at(2048 - 15, &mut buf).is_err(),
            "one byte past the end"
        );
        assert!(
            vol.read_exact_at(u64::MAX - 2, &mut buf).is_err(),
            "overflowing offset"
        );
        assert!(
            disk.volume(8000, 200, Budget::new(1)).is_err(),
            "volume beyond the disk"
        );
    }

    #[test]
    fn budget_and_cancel_stop_reads() {
        let disk = disk_with(&[1u8; 4096]);
        let budget = Budget::new(100);
        let vol = disk.volume(0, 4096, budget.clone()).expect("volume");
        let mut buf = [0u8; 60];
        assert!(vol.read_exact_at(0, &mut buf).is_ok());
        assert!(
            vol.read_exact_at(0, &mut buf).is_err(),
            "budget of 100 spent"
        );
        let other = disk.volume(0, 4096, Budget::new(u64::MAX)).expect("volume");
        other.budget().cancel();
        assert_eq!(
            other.read_exact_at(0, &mut buf).map_err(|e| e.kind()),
            Err(io::ErrorKind::Interrupted)
        );
    }

    #[test]
    fn read_and_seek_stop_at_the_end() {
        let disk = disk_with(&[3u8; 4096]);
        let mut vol = disk
            .volume(4000, 96, Budget::new(u64::MAX))
            .expect("volume");
        vol.seek(SeekFrom::End(-10)).expect("seek");
        let mut buf = [0u8; 64];
        assert_eq!(vol.read(&mut buf).expect("read"), 10);
        assert_eq!(vol.read(&mut buf).expect("read at end"), 0);
        assert!(vol.seek(SeekFrom::Current(-1000)).is_err());
    }

    fn linear(disk: &Arc<Disk>, start: u64, len: u64, offset: u64) -> MappedExtent {
        MappedExtent {
            start,
            len,
            layout: Layout::Linear {
                disk: Arc::clone(disk),
                offset,
            },
        }
    }

    #[test]
    fn mapped_linear_reads_split_across_extents() {
        let bytes: Vec<u8> = (0..4 * PAGE).map(|i| (i % 253) as u8).collect();
        let disk = disk_with(&bytes);
        // Logical [0, 4096) is physical [8192, 12288); logical [4096, 6144) is physical [100, 2148).
        let mapped = Disk::mapped(
            "vg/lv",
            vec![linear(&disk, 0, 4096, 8192), linear(&disk, 4096, 2048, 100)],
        )
        .expect("mapped");
        assert_eq!(mapped.size(), 6144);
        let vol = mapped
            .volume(0, 6144, Budget::new(u64::MAX))
            .expect("volume");
        let mut buf = vec![0u8; 200];
        vol.read_exact_at(4000, &mut buf).expect("read across");
        let mut want = bytes[8192 + 4000..8192 + 4096].to_vec();
        want.extend_from_slice(&bytes[100..204]);
        assert_eq!(buf, want);
        assert!(vol.read_exact_at(6100, &mut buf).is_err(), "past the end");
        assert_eq!(
            mapped.bytes_read(),
            0,
            "a mapped disk counts nothing itself"
        );
        assert_eq!(
            disk.bytes_read(),
            2 * PAGE,
            "the pages of the physical disk"
        );
        let mut all = Vec::new();
        vol.clone().read_to_end(&mut all).expect("read all");
        assert_eq!(all.len(), 6144);
    }

    #[test]
    fn mapped_striped_reads_round_robin() {
        let a = disk_with(&[b'a'; 8192]);
        let bytes: Vec<u8> = (0..8192u32).map(|i| (i % 7) as u8).collect();
        let b = disk_with(&bytes);
        let mapped = Disk::mapped(
            "vg/striped",
            vec![MappedExtent {
                start: 0,
                len: 4096,
                layout: Layout::Striped {
                    chunk: 1024,
                    stripes: vec![(Arc::clone(&a), 0), (Arc::clone(&b), 2048)],
                },
            }],
        )
        .expect("mapped");
        let mut buf = vec![0u8; 4096];
        mapped.read_exact_at(0, &mut buf).expect("read");
        assert_eq!(buf[..1024], [b'a'; 1024]);
        assert_eq!(buf[1024..2048], bytes[2048..3072]);
        assert_eq!(buf[2048..3072], [b'a'; 1024]);
        assert_eq!(buf[3072..], bytes[3072..4096]);
    }

    #[test]
    fn mapped_refuses_bad_layouts() {
        let disk = disk_with(&[0u8; 8192]);
        let striped = |len, chunk, n| MappedExtent {
            start: 0,
            len,
            layout: Layout::Striped {
                chunk,
                stripes: vec![(Arc::clone(&disk), 0); n],
            },
        };
        for (name, extents) in [
            (
                "gap",
                vec![linear(&disk, 0, 10, 0), linear(&disk, 20, 10, 0)],
            ),
            ("not from zero", vec![linear(&disk, 5, 10, 0)]),
            ("empty extent", vec![linear(&disk, 0, 0, 0)]),
            ("past the disk", vec![linear(&disk, 0, 4096, 8000)]),
            (
                "overflowing offset",
                vec![linear(&disk, 0, 10, u64::MAX - 2)],
            ),
            ("partial row", vec![striped(3000, 1024, 2)]),
            ("no stripes", vec![striped(2048, 1024, 0)]),
            ("zero chunk", vec![striped(2048, 0, 2)]),
            ("stripe past the disk", vec![striped(32768, 1024, 2)]),
        ] {
            let got = Disk::mapped("bad", extents)
                .map(|_| ())
                .map_err(|e| e.kind());
            assert_eq!(got, Err(io::ErrorKind::InvalidInput), "case {name}");
        }
    }
}
