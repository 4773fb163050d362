//! For the power-loss tests, in a build with the `test-hooks` feature only: a SQLite VFS that
//! wraps the default one and keeps, beside each file the edge's database uses, an image of what
//! a power cut would leave of it.
//!
//! A `kill -9` cannot lose a write the kernel has taken, so it cannot tell a missing sync; a
//! power cut loses every write not yet synced. Started with `CART_TEST_POWER_LOSS=<folder>`, an
//! edge opens its database through this VFS: each write goes to the real file and is also noted
//! as pending for the file's path; a sync (SQLite's own, or the flusher's [`sync`] of the
//! `-wal`) writes the path's pending writes into its image in `<folder>`. The test kills the
//! process and puts the images in place of the files: that is the power cut. (The same way
//! SQLite's own crash tests simulate one, with every unsynced write lost.)
//!
//! The first time a process opens a file, all of its content counts as pending: what a killed
//! process left in the kernel's cache is not on disk until someone syncs it. A file with no
//! image was never synced, and does not survive the cut. While `<folder>/fail-sync` exists,
//! every sync fails and writes nothing into the image.

// Test-only: a default VFS without the methods every SQLite build has, or an images folder that
// cannot be written, is a broken test set-up; in these `extern "C"` functions a panic aborts
// the process, which is what the test should see.
#![allow(clippy::expect_used)]

use std::collections::HashMap;
use std::ffi::{CStr, c_char, c_int, c_void};
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use rusqlite::ffi;

use crate::locks;

/// The VFS's name, for `Connection::open_with_flags_and_vfs`.
pub const VFS: &CStr = c"power-loss";

/// The environment variable naming the folder of images.
const FOLDER: &str = "CART_TEST_POWER_LOSS";

/// A write the disk does not have yet.
enum Pending {
    Write { offset: u64, bytes: Vec<u8> },
    Truncate(u64),
}

struct Tracker {
    folder: PathBuf,
    pending: Mutex<HashMap<PathBuf, Vec<Pending>>>,
    disk: Mutex<()>,
}

/// How long a sync takes: long enough that a kill often lands in one, as the tests' cuts of
/// the power need to tell a write answered before its sync.
const SYNC_TAKES: std::time::Duration = std::time::Duration::from_millis(2);

fn tracker() -> Option<&'static Tracker> {
    static TRACKER: OnceLock<Option<Tracker>> = OnceLock::new();
    TRACKER
        .get_or_init(|| {
            let folder = PathBuf::from(std::env::var_os(FOLDER)?);
            std::fs::create_dir_all(&folder).expect("the power-loss folder");
            register();
            Some(Tracker {
                folder,
                pending: Mutex::default(),
                disk: Mutex::default(),
            })
        })
        .as_ref()
}

/// Whether this process tracks its writes for a power cut (`CART_TEST_POWER_LOSS` is set).
pub fn tracking() -> bool {
    tracker().is_some()
}

/// Syncs the file at `path`: its pending writes go into its image. Fails, writing nothing,
/// while the folder holds `fail-sync`.
pub fn sync(path: &Path) -> std::io::Result<()> {
    let tracker = tracker().expect("sync is called only while tracking");
    if tracker.folder.join("fail-sync").exists() {
        return Err(std::io::Error::other("fdatasync failed (injected)"));
    }
    // One sync at a time reaches the disk, so that writes reach an image in the order made.
    let _disk = locks::lock(&tracker.disk);
    let writes = locks::lock(&tracker.pending)
        .get_mut(path)
        .map(std::mem::take)
        .unwrap_or_default();
    // A sync takes time, as a disk's does, while the writer goes on: a process killed now
    // loses these writes, as a power cut before the sync returned would.
    std::thread::sleep(SYNC_TAKES);
    let image = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(image_of(tracker, path))?;
    for write in writes {
        match write {
            Pending::Write { offset, bytes } => image.write_all_at(&bytes, offset)?,
            Pending::Truncate(size) => image.set_len(size)?,
        }
    }
    Ok(())
}

fn image_of(tracker: &Tracker, path: &Path) -> PathBuf {
    tracker
        .folder
        .join(path.file_name().expect("a database file has a name"))
}

/// Notes that `path` is open in this process; the first time, its whole content is pending.
fn opened(tracker: &Tracker, path: &Path) {
    let mut pending = locks::lock(&tracker.pending);
    if pending.contains_key(path) {
        return;
    }
    let bytes = std::fs::read(path).unwrap_or_default();
    let size = bytes.len() as u64;
    let whole = vec![Pending::Truncate(size), Pending::Write { offset: 0, bytes }];
    pending.insert(path.to_owned(), whole);
}

fn note(path: &Path, write: Pending) {
    if let Some(tracker) = tracker() {
        locks::lock(&tracker.pending)
            .entry(path.to_owned())
            .or_default()
            .push(write);
    }
}

// ---- the VFS ---------------------------------------------------------------------------------

/// The file object SQLite allocates for this VFS: ours, then the default VFS's right after it.
#[repr(C)]
struct PowerFile {
    base: ffi::sqlite3_file,
    real: *mut ffi::sqlite3_file,
    /// Null for a file with no name (SQLite's temporary files), which is not tracked.
    path: *mut PathBuf,
}

/// The size of [`PowerFile`], rounded up so that the real file after it is aligned.
const OURS: usize = std::mem::size_of::<PowerFile>().next_multiple_of(16);

fn register() {
    // SAFETY: the default VFS lives for the process; ours is leaked, so it does too. SQLite
    // calls our functions with the file objects it allocated at `szOsFile` bytes.
    unsafe {
        let real = ffi::sqlite3_vfs_find(std::ptr::null());
        assert!(!real.is_null(), "SQLite has a default VFS");
        let mut ours = std::ptr::read(real);
        ours.szOsFile = (*real).szOsFile + OURS as c_int;
        ours.pNext = std::ptr::null_mut();
        ours.zName = VFS.as_ptr();
        ours.pAppData = real.cast();
        ours.xOpen = Some(open);
        ours.xDelete = Some(delete);
        let rc = ffi::sqlite3_vfs_register(Box::into_raw(Box::new(ours)), 0);
        assert_eq!(rc, ffi::SQLITE_OK, "registering the power-loss VFS");
    }
}

unsafe fn real_vfs(vfs: *mut ffi::sqlite3_vfs) -> *mut ffi::sqlite3_vfs {
    unsafe { (*vfs).pAppData.cast() }
}

unsafe fn path_of(name: *const c_char) -> Option<PathBuf> {
    if name.is_null() {
        return None;
    }
    let name = unsafe { CStr::from_ptr(name) };
    Some(PathBuf::from(name.to_string_lossy().into_owned()))
}

unsafe extern "C" fn open(
    vfs: *mut ffi::sqlite3_vfs,
    name: ffi::sqlite3_filename,
    file: *mut ffi::sqlite3_file,
    flags: c_int,
    out_flags: *mut c_int,
) -> c_int {
    unsafe {
        let ours = file.cast::<PowerFile>();
        let real = file.cast::<u8>().add(OURS).cast::<ffi::sqlite3_file>();
        let real_vfs = real_vfs(vfs);
        (*ours).base.pMethods = std::ptr::null();
        let rc = (*real_vfs).xOpen.expect("xOpen")(real_vfs, name, real, flags, out_flags);
        if rc != ffi::SQLITE_OK {
            return rc;
        }
        let path = path_of(name);
        if let (Some(path), Some(tracker)) = (&path, tracker()) {
            opened(tracker, path);
        }
        (*ours).real = real;
        (*ours).path = path.map_or(std::ptr::null_mut(), |p| Box::into_raw(Box::new(p)));
        (*ours).base.pMethods = &METHODS;
        ffi::SQLITE_OK
    }
}

unsafe extern "C" fn delete(
    vfs: *mut ffi::sqlite3_vfs,
    name: *const c_char,
    sync_dir: c_int,
) -> c_int {
    unsafe {
        let real_vfs = real_vfs(vfs);
        let rc = (*real_vfs).xDelete.expect("xDelete")(real_vfs, name, sync_dir);
        if let (Some(path), Some(tracker)) = (path_of(name), tracker()) {
            locks::lock(&tracker.pending).remove(&path);
            let _ = std::fs::remove_file(image_of(tracker, &path));
        }
        rc
    }
}

/// Version 2: the shared-memory methods WAL needs, and no memory-mapped reads.
static METHODS: ffi::sqlite3_io_methods = ffi::sqlite3_io_methods {
    iVersion: 2,
    xClose: Some(close),
    xRead: Some(read),
    xWrite: Some(write),
    xTruncate: Some(truncate),
    xSync: Some(file_sync),
    xFileSize: Some(file_size),
    xLock: Some(lock),
    xUnlock: Some(unlock),
    xCheckReservedLock: Some(check_reserved_lock),
    xFileControl: Some(file_control),
    xSectorSize: Some(sector_size),
    xDeviceCharacteristics: Some(device_characteristics),
    xShmMap: Some(shm_map),
    xShmLock: Some(shm_lock),
    xShmBarrier: Some(shm_barrier),
    xShmUnmap: Some(shm_unmap),
    xFetch: None,
    xUnfetch: None,
};

/// The default VFS's file object and its methods.
unsafe fn real(
    file: *mut ffi::sqlite3_file,
) -> (*mut ffi::sqlite3_file, &'static ffi::sqlite3_io_methods) {
    unsafe {
        let real = (*file.cast::<PowerFile>()).real;
        (real, &*(*real).pMethods)
    }
}

unsafe fn tracked(file: *mut ffi::sqlite3_file) -> Option<&'static Path> {
    unsafe {
        (*file.cast::<PowerFile>())
            .path
            .as_ref()
            .map(PathBuf::as_path)
    }
}

unsafe extern "C" fn close(file: *mut ffi::sqlite3_file) -> c_int {
    unsafe {
        let (real, methods) = real(file);
        let rc = methods.xClose.expect("xClose")(real);
        let ours = file.cast::<PowerFile>();
        if !(*ours).path.is_null() {
            drop(Box::from_raw((*ours).path));
            (*ours).path = std::ptr::null_mut();
        }
        rc
    }
}

unsafe extern "C" fn write(
    file: *mut ffi::sqlite3_file,
    buf: *const c_void,
    amount: c_int,
    offset: i64,
) -> c_int {
    unsafe {
        let (real, methods) = real(file);
        let rc = methods.xWrite.expect("xWrite")(real, buf, amount, offset);
        if let (ffi::SQLITE_OK, Some(path)) = (rc, tracked(file)) {
            let bytes = std::slice::from_raw_parts(buf.cast::<u8>(), amount as usize).to_vec();
            let offset = offset as u64;
            note(path, Pending::Write { offset, bytes });
        }
        rc
    }
}

unsafe extern "C" fn truncate(file: *mut ffi::sqlite3_file, size: i64) -> c_int {
    unsafe {
        let (real, methods) = real(file);
        let rc = methods.xTruncate.expect("xTruncate")(real, size);
        if let (ffi::SQLITE_OK, Some(path)) = (rc, tracked(file)) {
            note(path, Pending::Truncate(size as u64));
        }
        rc
    }
}

unsafe extern "C" fn file_sync(file: *mut ffi::sqlite3_file, flags: c_int) -> c_int {
    unsafe {
        let (real, methods) = real(file);
        let Some(path) = tracked(file) else {
            return methods.xSync.expect("xSync")(real, flags);
        };
        if sync(path).is_err() {
            return ffi::SQLITE_IOERR_FSYNC;
        }
        methods.xSync.expect("xSync")(real, flags)
    }
}

unsafe extern "C" fn read(
    file: *mut ffi::sqlite3_file,
    buf: *mut c_void,
    amount: c_int,
    offset: i64,
) -> c_int {
    unsafe {
        let (real, methods) = real(file);
        methods.xRead.expect("xRead")(real, buf, amount, offset)
    }
}

unsafe extern "C" fn file_size(file: *mut ffi::sqlite3_file, size: *mut i64) -> c_int {
    unsafe {
        let (real, methods) = real(file);
        methods.xFileSize.expect("xFileSize")(real, size)
    }
}

unsafe extern "C" fn lock(file: *mut ffi::sqlite3_file, level: c_int) -> c_int {
    unsafe {
        let (real, methods) = real(file);
        methods.xLock.expect("xLock")(real, level)
    }
}

unsafe extern "C" fn unlock(file: *mut ffi::sqlite3_file, level: c_int) -> c_int {
    unsafe {
        let (real, methods) = real(file);
        methods.xUnlock.expect("xUnlock")(real, level)
    }
}

unsafe extern "C" fn check_reserved_lock(file: *mut ffi::sqlite3_file, out: *mut c_int) -> c_int {
    unsafe {
        let (real, methods) = real(file);
        methods.xCheckReservedLock.expect("xCheckReservedLock")(real, out)
    }
}

unsafe extern "C" fn file_control(
    file: *mut ffi::sqlite3_file,
    op: c_int,
    arg: *mut c_void,
) -> c_int {
    unsafe {
        let (real, methods) = real(file);
        methods.xFileControl.expect("xFileControl")(real, op, arg)
    }
}

unsafe extern "C" fn sector_size(file: *mut ffi::sqlite3_file) -> c_int {
    unsafe {
        let (real, methods) = real(file);
        methods.xSectorSize.expect("xSectorSize")(real)
    }
}

unsafe extern "C" fn device_characteristics(file: *mut ffi::sqlite3_file) -> c_int {
    unsafe {
        let (real, methods) = real(file);
        methods
            .xDeviceCharacteristics
            .expect("xDeviceCharacteristics")(real)
    }
}

unsafe extern "C" fn shm_map(
    file: *mut ffi::sqlite3_file,
    page: c_int,
    size: c_int,
    extend: c_int,
    out: *mut *mut c_void,
) -> c_int {
    unsafe {
        let (real, methods) = real(file);
        methods.xShmMap.expect("xShmMap")(real, page, size, extend, out)
    }
}

unsafe extern "C" fn shm_lock(
    file: *mut ffi::sqlite3_file,
    offset: c_int,
    n: c_int,
    flags: c_int,
) -> c_int {
    unsafe {
        let (real, methods) = real(file);
        methods.xShmLock.expect("xShmLock")(real, offset, n, flags)
    }
}

unsafe extern "C" fn shm_barrier(file: *mut ffi::sqlite3_file) {
    unsafe {
        let (real, methods) = real(file);
        methods.xShmBarrier.expect("xShmBarrier")(real);
    }
}

unsafe extern "C" fn shm_unmap(file: *mut ffi::sqlite3_file, delete: c_int) -> c_int {
    unsafe {
        let (real, methods) = real(file);
        methods.xShmUnmap.expect("xShmUnmap")(real, delete)
    }
}
