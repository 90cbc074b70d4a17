//! `agentos-runtime`: the built-in LLM agent runtime. Runs inside an
//! agent's sandbox; started by agentosd for agents spawned with a model.

fn main() {
    agentos::runtime::main()
}
