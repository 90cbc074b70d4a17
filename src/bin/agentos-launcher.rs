//! `agentos-launcher`: builds one agent's sandbox from the plan it receives
//! on stdin and execs the agent. Started by agentosd only.

fn main() {
    agentos::sandbox::launcher::main()
}
