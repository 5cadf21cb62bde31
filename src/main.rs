//! The `portcullis` command; everything it does lives in the library (`portcullis::cli`).

// mimalloc: thread-local free lists; the request path allocates small, short-lived objects
// (headers, futures, buffers), where glibc malloc showed ~8 % of the CPU profile.
#[global_allocator]
#[allow(unsafe_code)] // the attribute expands to the allocator's `unsafe impl`
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    portcullis::cli::main()
}
