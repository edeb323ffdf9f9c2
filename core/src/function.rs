//! The four Lambda functions of the stack, by name: the binary and package each one is built
//! from, the name it is deployed and logged under, and the logical id prefix of its resources
//! in the template.

use std::fmt;

/// One of the stack's functions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Function {
    /// Appends subscription batches to the log store and pushes them to followers.
    Forwarder,
    /// The HTTP API (and the log page).
    Api,
    /// The WebSocket API: `$connect`, `$disconnect` and messages.
    Websocket,
    /// Completes executions whose task stopped; re-drives the on-failure queues (the janitor).
    Completion,
}

impl Function {
    /// Every function, in the order the template declares them.
    pub const ALL: [Function; 4] = [
        Function::Forwarder,
        Function::Api,
        Function::Websocket,
        Function::Completion,
    ];

    /// The binary and package name (`forwarder`), which is also the suffix of the deployed
    /// function's name, of its log group and of its zip's directory.
    pub const fn name(self) -> &'static str {
        match self {
            Function::Forwarder => "forwarder",
            Function::Api => "api",
            Function::Websocket => "websocket",
            Function::Completion => "completion",
        }
    }

    /// The prefix of its resources' logical ids in the template (`Forwarder` for
    /// `ForwarderFunction`, `ForwarderRole`, `ForwarderCodeKey`, …).
    pub const fn logical_id(self) -> &'static str {
        match self {
            Function::Forwarder => "Forwarder",
            Function::Api => "Api",
            Function::Websocket => "Websocket",
            Function::Completion => "Completion",
        }
    }
}

impl fmt::Display for Function {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logical_ids_are_the_names_capitalised() {
        for f in Function::ALL {
            let mut chars = f.name().chars();
            let first = chars.next().unwrap().to_ascii_uppercase();
            assert_eq!(f.logical_id(), format!("{first}{}", chars.as_str()));
            assert_eq!(f.to_string(), f.name());
        }
    }
}
