//! `agentosd`: the AgentOS supervisor daemon.

fn main() -> anyhow::Result<()> {
    agentos::daemon::main()
}
