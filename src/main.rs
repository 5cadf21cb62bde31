//! The `portcullis` command; everything it does lives in the library (`portcullis::cli`).

// mimalloc: thread-local free lists; the request path allocates small, short-lived objects
// (headers, futures, buffers), where glibc malloc showed ~8 % of the CPU profile.
#[global_allocator]
#[allow(unsafe_code)] // the attribute expands to the allocator's `unsafe impl`
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    lean_memory();
    let open_files = raise_open_file_limit();
    portcullis::cli::main(open_files)
}

/// Raises the soft limit on open files to the hard limit, as HAProxy and nginx do at start:
/// an upgraded connection holds two descriptors (client and backend) for as long as it lasts,
/// and the usual soft limit (1,024) would refuse accepts long before `max_connections`.
/// `run` logs the outcome (README: WebSockets).
fn raise_open_file_limit() -> portcullis::cli::OpenFileLimit {
    use portcullis::cli::OpenFileLimit;
    #[cfg(unix)]
    {
        let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        #[allow(unsafe_code)] // getrlimit and setrlimit read and write only the struct given
        // SAFETY: `limit` and `wanted` are valid `rlimit` structs for the duration of each call.
        unsafe {
            if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 || limit.rlim_cur >= limit.rlim_max {
                return OpenFileLimit::Unchanged;
            }
            let wanted = libc::rlimit { rlim_cur: limit.rlim_max, rlim_max: limit.rlim_max };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &wanted) == 0 {
                return OpenFileLimit::Raised { from: limit.rlim_cur, to: limit.rlim_max };
            }
        }
        OpenFileLimit::Kept { soft: limit.rlim_cur, hard: limit.rlim_max }
    }
    #[cfg(not(unix))]
    OpenFileLimit::Unchanged
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
