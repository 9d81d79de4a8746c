//! Large arrays that the packet path indexes at random (the SAD's and SPD's
//! slot arrays, the workers' flow caches), each on transparent huge pages of
//! its own.
//!
//! A lookup in a multi-megabyte table touches a different 4 KiB page almost
//! every time; on 2 MiB pages one TLB entry covers the array. The daemon's
//! allocator keeps its heap on huge pages, but maps blocks above 1 MiB
//! straight from the kernel (so that the old copy of a grown table goes back
//! to it when freed, instead of staying resident, unused, in the heap;
//! `ffi::alloc::big_blocks_from_the_os`), and those mappings are not advised
//! for huge pages. [`HugeArray`] therefore allocates arrays of 1 MiB and more
//! 2 MiB-aligned and advises the kernel (`MADV_HUGEPAGE`) before the first
//! write, so they are faulted in as huge pages whatever the allocator does.

use std::alloc::Layout;
use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;

/// Arrays of at least this many bytes get their own huge pages.
const HUGE_MIN_BYTES: usize = 1 << 20;
/// The huge page size on x86-64 and arm64 (4 KiB granules).
const HUGE_PAGE: usize = 2 << 20;

/// A fixed-length heap array, on huge pages when large (see the module doc).
pub(crate) struct HugeArray<T> {
    ptr: NonNull<T>,
    len: usize,
    /// Layout it was allocated with (`None`: nothing allocated).
    layout: Option<Layout>,
}

// SAFETY: a HugeArray owns its elements like a Box<[T]> does.
unsafe impl<T: Send> Send for HugeArray<T> {}
// SAFETY: shared access only hands out &T, like &Box<[T]>.
unsafe impl<T: Sync> Sync for HugeArray<T> {}

impl<T> HugeArray<T> {
    /// An array of `len` elements, element `i` being `init(i)`.
    pub(crate) fn new(len: usize, mut init: impl FnMut(usize) -> T) -> Self {
        let bytes = std::mem::size_of::<T>().saturating_mul(len);
        if bytes == 0 {
            // Zero-sized: no allocation (elements of size 0 still get "written").
            let me = Self {
                ptr: NonNull::dangling(),
                len,
                layout: None,
            };
            for i in 0..len {
                std::mem::forget(init(i));
            }
            return me;
        }
        // Large arrays take whole huge pages: 2 MiB aligned, size rounded up.
        let (size, align) = if bytes >= HUGE_MIN_BYTES {
            (
                bytes.next_multiple_of(HUGE_PAGE),
                HUGE_PAGE.max(std::mem::align_of::<T>()),
            )
        } else {
            (bytes, std::mem::align_of::<T>())
        };
        let layout = match Layout::from_size_align(size, align) {
            Ok(l) => l,
            Err(_) => std::alloc::handle_alloc_error(Layout::new::<T>()),
        };
        // SAFETY: `layout` has a non-zero size.
        let raw = unsafe { std::alloc::alloc(layout) } as *mut T;
        let Some(ptr) = NonNull::new(raw) else {
            std::alloc::handle_alloc_error(layout)
        };
        let huge = align == HUGE_PAGE;
        if huge {
            // SAFETY: `ptr` starts a live allocation of `size` bytes (whole
            // huge pages, 2 MiB aligned). MADV_HUGEPAGE changes no contents;
            // failure (THP disabled, old kernel) only leaves small pages.
            unsafe {
                libc::madvise(ptr.as_ptr() as *mut libc::c_void, size, libc::MADV_HUGEPAGE);
            }
        }
        for i in 0..len {
            // SAFETY: `i < len` and the allocation holds `len` elements.
            unsafe { ptr.as_ptr().add(i).write(init(i)) };
        }
        if huge {
            // The allocator may have written its own bookkeeping into the
            // first page before the advice, which makes the kernel fault that
            // 2 MiB region in as small pages: collapse the array into huge
            // pages now (Linux 6.1+; contents are kept; on failure, small
            // pages stay and khugepaged may collapse them later).
            // SAFETY: as above; MADV_COLLAPSE keeps the contents.
            unsafe {
                libc::madvise(ptr.as_ptr() as *mut libc::c_void, size, libc::MADV_COLLAPSE);
            }
        }
        Self {
            ptr,
            len,
            layout: Some(layout),
        }
    }
}

impl<T> Deref for HugeArray<T> {
    type Target = [T];

    #[inline]
    fn deref(&self) -> &[T] {
        // SAFETY: `ptr` holds `len` initialised elements (or is dangling with
        // zero-sized elements), owned by `self`.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl<T> DerefMut for HugeArray<T> {
    #[inline]
    fn deref_mut(&mut self) -> &mut [T] {
        // SAFETY: as in `deref`, with exclusive access through `&mut self`.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl<T> Drop for HugeArray<T> {
    fn drop(&mut self) {
        // SAFETY: the elements are initialised and dropped once, here.
        unsafe { std::ptr::drop_in_place(std::ptr::slice_from_raw_parts_mut(self.ptr.as_ptr(), self.len)) };
        if let Some(layout) = self.layout {
            // SAFETY: allocated in `new` with this layout.
            unsafe { std::alloc::dealloc(self.ptr.as_ptr() as *mut u8, layout) };
        }
    }
}

impl<T: std::fmt::Debug> std::fmt::Debug for HugeArray<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HugeArray")
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::rc::Rc;

    #[test]
    fn small_and_large_arrays_hold_and_drop_their_elements() {
        let counter = Rc::new(());
        for len in [0usize, 1, 64, (HUGE_MIN_BYTES / 8) + 1] {
            let a = HugeArray::new(len, |i| (i as u64, counter.clone()));
            assert_eq!(a.len(), len);
            assert!(a.iter().enumerate().all(|(i, (v, _))| *v == i as u64));
            if std::mem::size_of_val(&*a) >= HUGE_MIN_BYTES {
                assert_eq!(a.as_ptr() as usize % HUGE_PAGE, 0, "large arrays are 2 MiB aligned");
            }
            assert_eq!(Rc::strong_count(&counter), len + 1);
            drop(a);
            assert_eq!(Rc::strong_count(&counter), 1, "every element dropped");
        }
    }

    #[test]
    fn elements_can_be_changed() {
        let mut a = HugeArray::new(10, |_| 0u32);
        a[3] = 7;
        assert_eq!(a.iter().sum::<u32>(), 7);
    }
}
