pub async fn run(_c: crate::args::BenchCmd) -> anyhow::Result<std::process::ExitCode> {
    anyhow::bail!("later")
}
