//! The flash-sale cart rules ([`cart_rules`]) as a WebAssembly component: the `rules` export of
//! `wit/cart.wit`.
//!
//! - [`rules`]: each export, converting the WIT's types to the rules' and back.
//!
//! On wasm32 it is built without the standard library, so that the component imports nothing:
//! each call's fresh instance is then one core module with no WASI context to make, and its
//! memory never grows. A panic traps (the host reports a guest fault).

#![cfg_attr(target_arch = "wasm32", no_std)]

extern crate alloc;

/// Every allocation comes out of an arena in the module's own memory, so a call never grows its
/// memory (growing, and shrinking it back when the host resets the instance, are system calls).
/// `set-quantity` needs a few hundred bytes of it, a checkout of the most lines tens of KiB;
/// running out traps.
#[cfg(target_arch = "wasm32")]
#[global_allocator]
static ALLOCATOR: talc::wasm::WasmArenaTalc = {
    use core::mem::MaybeUninit;
    static mut ARENA: [MaybeUninit<u8>; ARENA_BYTES] = [MaybeUninit::uninit(); ARENA_BYTES];
    // SAFETY: nothing but the allocator touches ARENA.
    unsafe { talc::wasm::new_wasm_arena_allocator(&raw mut ARENA) }
};

#[cfg(target_arch = "wasm32")]
const ARENA_BYTES: usize = 256 << 10;

/// The canonical ABI's allocator, through which the host passes strings and lists in. On
/// wasm32-wasip2 wasi-libc exports it, which std links; wit-bindgen's `realloc` feature brings
/// its own only for wasip1. Without std, this crate must.
#[cfg(target_arch = "wasm32")]
#[unsafe(no_mangle)]
unsafe extern "C" fn cabi_realloc(
    old_ptr: *mut u8,
    old_len: usize,
    align: usize,
    new_len: usize,
) -> *mut u8 {
    use alloc::alloc::{Layout, alloc, realloc};
    // The canonical ABI never shrinks a block to nothing.
    debug_assert!(old_len == 0 || new_len > 0);
    if new_len == 0 {
        return align as *mut u8;
    }
    let Ok(layout) = Layout::from_size_align(if old_len == 0 { new_len } else { old_len }, align)
    else {
        core::arch::wasm32::unreachable()
    };
    // SAFETY: `layout` has a non-zero size; with `old_len` above 0 the canonical ABI passes a
    // block this allocator gave out with that length and alignment.
    let ptr = unsafe {
        if old_len == 0 {
            alloc(layout)
        } else {
            realloc(old_ptr, layout, new_len)
        }
    };
    if ptr.is_null() {
        core::arch::wasm32::unreachable()
    }
    ptr
}

// `memcmp` and the other memory routines core calls: wasi-libc's, as under std (they import
// nothing).
#[cfg(target_arch = "wasm32")]
#[link(name = "c")]
unsafe extern "C" {}

#[cfg(target_arch = "wasm32")]
#[panic_handler]
fn panic(_: &core::panic::PanicInfo<'_>) -> ! {
    core::arch::wasm32::unreachable()
}

mod bindings {
    wit_bindgen::generate!({ path: "../../wit", world: "cart" });
}
mod rules;

use bindings::exports::flashsale::cart::rules::{
    CheckoutOutcome, CheckoutRequest, Guest, SetRequest,
};
use bindings::flashsale::cart::types::{CartError, Line};

struct Cart;

impl Guest for Cart {
    fn set_quantity(req: SetRequest) -> Result<Option<Line>, CartError> {
        rules::set_quantity(req)
    }

    fn checkout(req: CheckoutRequest) -> Result<CheckoutOutcome, CartError> {
        rules::checkout(req)
    }
}

bindings::export!(Cart with_types_in bindings);
