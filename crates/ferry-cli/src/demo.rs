pub async fn run(
    _g: &crate::args::Global,
    _a: &crate::args::DemoArgs,
) -> anyhow::Result<std::process::ExitCode> {
    anyhow::bail!("later")
}
