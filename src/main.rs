//! The `portcullis` command; everything it does lives in the library (`portcullis::cli`).

// mimalloc: thread-local free lists; the request path allocates small, short-lived objects
// (headers, futures, buffers), where glibc malloc showed ~8 % of the CPU profile.
#[global_allocator]
#[allow(unsafe_code)] // the attribute expands to the allocator's `unsafe impl`
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    lean_memory();
    portcullis::cli::main()
}

/// No transparent huge pages for this process. mimalloc is built without its `MADV_HUGEPAGE`
/// hints (the `no_thp` feature), and this also turns THP off where the host enables it for
/// every mapping (`always`), as mimalloc's `MIMALLOC_ALLOW_THP=0` would: its eagerly committed
/// arenas then stay at 4 KiB pages and the resident set near what is in use (README,
/// "Memory"). Setting `MIMALLOC_ALLOW_THP` in the environment leaves the choice to mimalloc.
fn lean_memory() {
    #[cfg(target_os = "linux")]
    if std::env::var_os("MIMALLOC_ALLOW_THP").is_none() {
        #[allow(unsafe_code)] // prctl with integer arguments only; it changes no Rust-visible state
        // SAFETY: PR_SET_THP_DISABLE takes no pointers; a failure leaves THP as it was.
        unsafe {
            libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
        }
    }
}
