//! `agentos-launcher`: the launcher server. agentosd starts one at start-up
//! and asks it for every sandbox; it forks a relay per sandbox that builds
//! the confinement and execs the agent. Started by agentosd only.

fn main() {
    agentos::sandbox::launch_server::main()
}
