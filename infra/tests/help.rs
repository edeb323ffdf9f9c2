//! Keys never appear in `--help` (clap shows environment values by default).

#[test]
fn help_never_shows_a_key_from_the_environment() {
    for args in [&["up", "--help"][..], &["smoke", "--help"][..]] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_deploy"))
            .args(args)
            .env(
                "RUNVOY_LOCAL_API_KEY",
                "key-from-the-environment-0123456789",
            )
            .env("RUNVOY_API_KEY", "key-from-the-environment-0123456789")
            .output()
            .unwrap();
        let help = String::from_utf8_lossy(&out.stdout);
        assert!(help.contains("--api-key"), "{help}");
        assert!(
            !help.contains("key-from-the-environment"),
            "deploy {args:?} shows the key:\n{help}"
        );
    }
}
