//! `Rnnlm::step` performs zero heap allocations (a counting `#[global_allocator]`; this test
//! binary holds one test so nothing else allocates meanwhile).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use rand::SeedableRng;
use rnnlm::{Config, Params, Rnnlm, Vocab};

struct Counting;

static ALLOCS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards every call unchanged to the system allocator; the counter is a side effect.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn step_allocates_nothing() {
    let (v, d, h, n) = (1000, 48, 80, 7);
    let cfg = Config::new(v, d, h).unwrap();
    let params = Params::init_book(cfg, &mut rand_chacha::ChaCha8Rng::seed_from_u64(1));
    let vocab = Vocab::from_words((0..v).map(|i| format!("w{i}")).collect()).unwrap();
    let model = Rnnlm::new(params, vocab).unwrap();
    let mut state = model.zero_state(n);
    let mut logits = vec![0.0f32; n * v];
    let mut tokens = vec![0u32; n];
    // Warm-up: the first kernel call detects the ISA once (reading RNNLM_ISA allocates).
    model.step(&mut state, &tokens, &mut logits).unwrap();
    let before = ALLOCS.load(Ordering::SeqCst);
    for s in 0..20u32 {
        for (i, t) in tokens.iter_mut().enumerate() {
            *t = (s * 31 + i as u32 * 7) % v as u32;
        }
        model.step(&mut state, &tokens, &mut logits).unwrap();
    }
    assert_eq!(ALLOCS.load(Ordering::SeqCst) - before, 0, "step allocated");
    state.reset();
    std::hint::black_box(&logits);
}
