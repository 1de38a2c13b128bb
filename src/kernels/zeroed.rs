//! Zeroed allocations that fail with a `None` instead of aborting: the one allocation
//! primitive with `unsafe` (the allocator's zeroed memory handed to a `Vec`).

use std::alloc::Layout;

/// Values whose all-zero bit pattern is zero, so a zeroed allocation is a vector of zeros.
///
/// # Safety
/// Implement only for types for which all-zero bytes are a valid value.
pub(crate) unsafe trait Zeroable: Copy {}
// SAFETY: all-zero bits are 0.0.
unsafe impl Zeroable for f32 {}
// SAFETY: all-zero bits are 0.
unsafe impl Zeroable for u32 {}
// SAFETY: all-zero bits are 0.
unsafe impl Zeroable for i32 {}
// SAFETY: all-zero bits are 0.0.
unsafe impl Zeroable for f64 {}

/// `len` zeros from the allocator's zeroed memory (`calloc`: large buffers are not written
/// here), or `None` if the size overflows or the allocator refuses.
pub(crate) fn try_zeroed<T: Zeroable>(len: usize) -> Option<Vec<T>> {
    let layout = Layout::array::<T>(len).ok()?;
    if layout.size() == 0 {
        return Some(Vec::new());
    }
    // SAFETY: the layout has a non-zero size. A non-null result is `len` zeroed, hence valid
    // (`Zeroable`), values of `T`, allocated by the global allocator with exactly the layout
    // `Vec<T>` uses for capacity `len`, so `Vec` may own and free it.
    unsafe {
        let ptr = std::alloc::alloc_zeroed(layout).cast::<T>();
        if ptr.is_null() {
            return None;
        }
        Some(Vec::from_raw_parts(ptr, len, len))
    }
}
