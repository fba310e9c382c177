//! In-memory [`Storage`] with crash simulation, for model tests, fuzzing and
//! (later) the deterministic cluster simulator.
//!
//! Each file keeps what a page cache would hold (`data`) and what the last
//! fdatasync made durable (`durable`). [`MemStorage::crash`] throws away the
//! page cache the way a power cut can: every file falls back to its durable
//! bytes plus, at random, a torn prefix of what was written after them.
//! Every future it returns is ready at once, so [`block_on`] can drive it.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;

use super::{Storage, StorageFile};

#[derive(Default, Debug)]
struct FileData {
    data: Vec<u8>,
    durable: Vec<u8>,
    /// Bytes of `data` that a page cache would hold (see
    /// [`MemStorage::cached_bytes`]): written and not dropped since.
    cached: BTreeSet<u64>,
    /// End of the blocks reserved by `reserve` (at least the length).
    reserved: u64,
}

/// Pages as the cache model counts them.
const MEM_PAGE: u64 = 4096;

/// Handle to one in-memory file.
#[derive(Clone, Debug)]
pub struct MemFile(Rc<RefCell<FileData>>, Rc<Cell<u64>>);

type Task = std::pin::Pin<Box<dyn Future<Output = ()>>>;

thread_local! {
    /// Files whose syncs are held back (see [`MemStorage::hold_syncs`]), by
    /// address; per thread, as each test runs on its own.
    static HELD_FILES: RefCell<Vec<usize>> = const { RefCell::new(Vec::new()) };
    /// Directories whose syncs are held back.
    static HELD_DIRS: RefCell<Vec<PathBuf>> = const { RefCell::new(Vec::new()) };
    /// Tasks spawned while syncs are held; [`block_on`] polls them.
    static HELD_TASKS: RefCell<Vec<Task>> = const { RefCell::new(Vec::new()) };
}

fn syncs_held() -> bool {
    HELD_FILES.with(|h| !h.borrow().is_empty()) || HELD_DIRS.with(|h| !h.borrow().is_empty())
}

fn release_held() {
    HELD_FILES.with(|h| h.borrow_mut().clear());
    HELD_DIRS.with(|h| h.borrow_mut().clear());
}

/// Pending while `held` says so.
async fn unless_held(held: impl Fn() -> bool) {
    std::future::poll_fn(|_| {
        if held() {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await
}

/// Poll every held task once; drop those that finished.
fn poll_held_tasks(cx: &mut Context<'_>) {
    let tasks = HELD_TASKS.with(|t| std::mem::take(&mut *t.borrow_mut()));
    let mut pending = Vec::new();
    for mut task in tasks {
        if task.as_mut().poll(cx).is_pending() {
            pending.push(task);
        }
    }
    // Tasks spawned by the ones just polled come after them.
    HELD_TASKS.with(|t| {
        let mut t = t.borrow_mut();
        pending.append(&mut t);
        *t = pending;
    });
}

#[derive(Default, Debug)]
struct Fs {
    files: BTreeMap<PathBuf, MemFile>,
    dirs: BTreeSet<PathBuf>,
    syncs: Rc<Cell<u64>>,
}

/// An in-memory file system and clock.
#[derive(Clone, Default, Debug)]
pub struct MemStorage {
    fs: Rc<RefCell<Fs>>,
    clock_ms: Rc<Cell<u64>>,
}

impl MemStorage {
    pub fn new(start_ms: u64) -> Self {
        let s = Self::default();
        s.clock_ms.set(start_ms);
        s
    }

    /// Move the simulated clock forward.
    pub fn advance_ms(&self, ms: u64) {
        self.clock_ms.set(self.clock_ms.get().saturating_add(ms));
    }

    /// Number of fdatasyncs issued so far (to check group commit).
    pub fn sync_count(&self) -> u64 {
        self.fs.borrow().syncs.get()
    }

    /// Hold the syncs of the file at `path` (fdatasync) or, if no file is
    /// there, of the directory `path` back until [`Self::release_syncs`]:
    /// they stay pending, and tasks spawned meanwhile are queued and polled
    /// by [`block_on`] instead of run to completion at once. Lets a test
    /// stop background work (a seal, a flush) in the middle while the rest
    /// goes on.
    pub fn hold_syncs(&self, path: &Path) {
        match self.fs.borrow().files.get(path) {
            Some(f) => {
                let addr = Rc::as_ptr(&f.0) as usize;
                HELD_FILES.with(|h| h.borrow_mut().push(addr));
            }
            None => HELD_DIRS.with(|h| h.borrow_mut().push(path.to_owned())),
        }
    }

    /// Let held syncs complete and run the queued tasks to the end.
    pub fn release_syncs(&self) {
        release_held();
        block_on(std::future::ready(()));
    }

    /// Simulate a power cut: each file keeps its durable bytes and, chosen by
    /// `seed`, none, some or all of the bytes written after them (a torn tail,
    /// sometimes with its last byte garbled).
    pub fn crash(&self, seed: u64) {
        let mut rng = seed ^ 0x9E37_79B9_7F4A_7C15;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        // The power cut stops whatever was waiting.
        HELD_TASKS.with(|t| t.borrow_mut().clear());
        release_held();
        let fs = self.fs.borrow();
        for file in fs.files.values() {
            let mut f = file.0.borrow_mut();
            let FileData { data, durable, .. } = &mut *f;
            let mut after = durable.clone();
            if data.len() > durable.len() && data.starts_with(durable) {
                let extra = data.len() - durable.len();
                let keep = match next() % 3 {
                    0 => 0,
                    1 => extra,
                    _ => (next() % (extra as u64 + 1)) as usize,
                };
                after.extend_from_slice(&data[durable.len()..durable.len() + keep]);
                if keep > 0 && next() % 4 == 0 {
                    let last = after.len() - 1;
                    after[last] ^= 0x5A;
                }
            }
            *data = after.clone();
            *durable = after;
            f.cached.clear();
        }
    }

    /// Overwrite a file's whole contents, durably (for corruption tests).
    pub fn put_file(&self, path: &Path, bytes: Vec<u8>) {
        let mut fs = self.fs.borrow_mut();
        let data = FileData {
            data: bytes.clone(),
            durable: bytes,
            ..FileData::default()
        };
        let file = MemFile(Rc::new(RefCell::new(data)), fs.syncs.clone());
        fs.files.insert(path.to_owned(), file);
    }

    /// Bytes of a file a page cache would hold: whole pages written and
    /// not dropped by [`StorageFile::drop_cached`] since.
    pub fn cached_bytes(&self, path: &Path) -> Option<u64> {
        let fs = self.fs.borrow();
        let f = fs.files.get(path)?.0.borrow();
        Some(f.cached.len() as u64 * MEM_PAGE)
    }

    /// Where a file's reserved blocks end (its length if none are reserved
    /// past it).
    pub fn reserved_end(&self, path: &Path) -> Option<u64> {
        let fs = self.fs.borrow();
        let f = fs.files.get(path)?.0.borrow();
        Some(f.reserved.max(f.data.len() as u64))
    }

    /// A file's current contents, if it exists.
    pub fn file_bytes(&self, path: &Path) -> Option<Vec<u8>> {
        self.fs
            .borrow()
            .files
            .get(path)
            .map(|f| f.0.borrow().data.clone())
    }
}

impl StorageFile for MemFile {
    async fn read_at(&self, pos: u64, len: usize) -> io::Result<Vec<u8>> {
        let f = self.0.borrow();
        let start = (pos as usize).min(f.data.len());
        let end = start.saturating_add(len).min(f.data.len());
        Ok(f.data[start..end].to_vec())
    }

    async fn write_all_at(&self, pos: u64, bufs: Vec<Bytes>) -> io::Result<()> {
        let mut f = self.0.borrow_mut();
        let mut pos = usize::try_from(pos).map_err(|_| io::Error::other("position too large"))?;
        for buf in bufs {
            let end = pos + buf.len();
            if f.data.len() < end {
                f.data.resize(end, 0);
            }
            f.data[pos..end].copy_from_slice(&buf);
            let (first, last) = (pos as u64 / MEM_PAGE, (end as u64).div_ceil(MEM_PAGE));
            f.cached.extend(first..last);
            pos = end;
        }
        Ok(())
    }

    async fn sync_data(&self) -> io::Result<()> {
        let addr = Rc::as_ptr(&self.0) as usize;
        unless_held(|| HELD_FILES.with(|h| h.borrow().contains(&addr))).await;
        let mut f = self.0.borrow_mut();
        f.durable = f.data.clone();
        self.1.set(self.1.get() + 1);
        Ok(())
    }

    async fn set_len(&self, len: u64) -> io::Result<()> {
        let n = usize::try_from(len).map_err(|_| io::Error::other("length too large"))?;
        let mut f = self.0.borrow_mut();
        f.data.resize(n, 0);
        f.reserved = len;
        let past = len.div_ceil(MEM_PAGE);
        f.cached.retain(|&p| p < past);
        Ok(())
    }

    async fn len(&self) -> io::Result<u64> {
        Ok(self.0.borrow().data.len() as u64)
    }

    async fn reserve(&self, pos: u64, len: u64) -> io::Result<()> {
        let mut f = self.0.borrow_mut();
        f.reserved = f.reserved.max(pos.saturating_add(len));
        Ok(())
    }

    /// Drops the whole pages of the range, and a partial last page at the
    /// end of the file, as Linux does; clean or not (the model does not
    /// track dirtiness; the log only drops durable bytes).
    fn drop_cached(&self, pos: u64, len: u64) {
        let mut f = self.0.borrow_mut();
        let end = pos.saturating_add(len);
        let first = pos.div_ceil(MEM_PAGE);
        let last = if end >= f.data.len() as u64 {
            end.div_ceil(MEM_PAGE)
        } else {
            end / MEM_PAGE
        };
        f.cached.retain(|p| !(first..last).contains(p));
    }
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("{} not found", path.display()),
    )
}

impl Storage for MemStorage {
    type File = MemFile;

    async fn open(&self, path: &Path, create: bool) -> io::Result<MemFile> {
        let mut fs = self.fs.borrow_mut();
        if let Some(f) = fs.files.get(path) {
            return Ok(f.clone());
        }
        if !create {
            return Err(not_found(path));
        }
        let parent = path.parent().unwrap_or(Path::new(""));
        if !parent.as_os_str().is_empty() && !fs.dirs.contains(parent) {
            return Err(not_found(parent));
        }
        let f = MemFile(Rc::new(RefCell::new(FileData::default())), fs.syncs.clone());
        fs.files.insert(path.to_owned(), f.clone());
        Ok(f)
    }

    async fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut fs = self.fs.borrow_mut();
        // Handles to a replaced `to` keep its old contents, as an open fd does.
        let f = fs.files.remove(from).ok_or_else(|| not_found(from))?;
        fs.files.insert(to.to_owned(), f);
        Ok(())
    }

    async fn remove(&self, path: &Path) -> io::Result<()> {
        self.fs.borrow_mut().files.remove(path);
        Ok(())
    }

    async fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        let mut fs = self.fs.borrow_mut();
        for p in path.ancestors() {
            if !p.as_os_str().is_empty() {
                fs.dirs.insert(p.to_owned());
            }
        }
        Ok(())
    }

    async fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        let mut fs = self.fs.borrow_mut();
        fs.files.retain(|p, _| !p.starts_with(path));
        fs.dirs.retain(|p| !p.starts_with(path));
        Ok(())
    }

    async fn list(&self, path: &Path) -> io::Result<Vec<String>> {
        let fs = self.fs.borrow();
        if !fs.dirs.contains(path) {
            return Err(not_found(path));
        }
        let files = fs.files.keys().map(|p| p.as_path());
        let dirs = fs.dirs.iter().map(|p| p.as_path());
        Ok(files
            .chain(dirs)
            .filter(|p| p.parent() == Some(path))
            .filter_map(|p| p.file_name()?.to_str().map(str::to_owned))
            .collect())
    }

    async fn sync_dir(&self, path: &Path) -> io::Result<()> {
        unless_held(|| HELD_DIRS.with(|h| h.borrow().iter().any(|d| d == path))).await;
        let syncs = self.fs.borrow().syncs.clone();
        syncs.set(syncs.get() + 1);
        Ok(())
    }

    fn spawn(&self, task: impl Future<Output = ()> + 'static) {
        if syncs_held() {
            HELD_TASKS.with(|t| t.borrow_mut().push(Box::pin(task)));
        } else {
            // In-memory I/O never waits, so the task finishes right here.
            block_on(task);
        }
    }

    fn now_ms(&self) -> u64 {
        self.clock_ms.get()
    }
}

/// Run a future whose I/O is all in memory to completion, polling the
/// tasks spawned while syncs were held (see [`MemStorage::hold_syncs`])
/// alongside; returns once the future is done and, unless syncs are held,
/// every such task too.
///
/// Panics if the future waits on something that never wakes it, which with
/// [`MemStorage`] means a bug in the code under test.
pub fn block_on<F: Future>(fut: F) -> F::Output {
    let mut fut = pin!(fut);
    let mut cx = Context::from_waker(Waker::noop());
    let mut out = None;
    for _ in 0..1_000_000 {
        if out.is_none() {
            if let Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
                out = Some(v);
            }
        }
        poll_held_tasks(&mut cx);
        let queued = HELD_TASKS.with(|t| !t.borrow().is_empty());
        if !queued || syncs_held() {
            if let Some(v) = out.take() {
                return v;
            }
        }
    }
    panic!("block_on: future did not complete over in-memory storage");
}
