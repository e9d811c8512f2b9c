//! With the feature on, a malformed `SKIFF_FAILPOINTS` is reported by `init` and makes
//! the first hit panic rather than injecting nothing.
#![cfg(feature = "enabled")]

#[test]
fn malformed_spec_is_an_init_error_and_a_panic_at_first_hit() {
    std::env::set_var(skiff_failpoints::ENV_VAR, "backend-commit=explode");
    let err = skiff_failpoints::init().unwrap_err();
    assert!(err.contains("unknown action `explode`"), "{err}");
    let hit = std::panic::catch_unwind(|| {
        skiff_failpoints::fail_point!("backend-commit");
    });
    let payload = hit.expect_err("a malformed spec panics at first use");
    let msg = payload
        .downcast_ref::<String>()
        .cloned()
        .unwrap_or_default();
    assert!(msg.contains("SKIFF_FAILPOINTS"), "{msg}");
}
