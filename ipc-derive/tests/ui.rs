//! Compile-time behaviour of `#[expose]`: what it accepts (`ui/pass`, which
//! are also run) and the exact errors for what it rejects (`ui/fail`, each
//! with a reviewed `.stderr`). Regenerate the `.stderr` files with
//! `TRYBUILD=overwrite cargo test -p ipc-derive --test ui`, then read them.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.pass("tests/ui/pass/*.rs");
    t.compile_fail("tests/ui/fail/*.rs");
}
