//! Following `ASK` while a cluster slot migrates.
//!
//! fred 10.1 answers an `ASK` by writing `ASKING` to the importing node's
//! connection outside its queue of commands in flight, taking the next reply
//! read there as `ASKING`'s (so another call in flight on that connection gets
//! the wrong reply), and then routing the command by its slot again, to the
//! migrating node, which answers `ASK` again. The store therefore has fred
//! follow no redirection (`MAX_REDIRECTIONS` in `store.rs`): every `ASK` comes
//! back as "Too many redirections", and the store finds the importing node in
//! the migrating node's `CLUSTER NODES` (`[<slot>->-<node id>]`) and sends the
//! command there itself, right after `ASKING`, in one pipeline pinned to that
//! node (fred writes a pipeline's commands back to back on one connection, and
//! reads their replies in turn). A `MOVED` comes back the same way, after fred
//! refreshed its slot map; the store's retry then goes to the new owner.

use fred::{
    error::{Error as FredError, ErrorKind},
    interfaces::ClientLike,
    types::{
        config::{Options, Server},
        ClusterHash, CustomCommand, Value,
    },
};

use crate::{batch::Batch, RedisStore};

/// The reply fred gives when it ran out of redirections.
pub(crate) fn is_redirection_loop(error: &FredError) -> bool {
    matches!(error.kind(), ErrorKind::Routing) && error.details().contains("redirection")
}

/// The importing node of `slot` in a `CLUSTER NODES` text seen from the
/// migrating node, as `host:port`.
pub(crate) fn importing_node(nodes: &str, slot: u16) -> Option<(String, u16)> {
    let marker = format!("[{slot}->-");
    let target_id = nodes.lines().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if !fields.get(2)?.contains("myself") {
            return None;
        }
        fields.iter().skip(8).find_map(|range| {
            range
                .strip_prefix(&marker)
                .and_then(|rest| rest.strip_suffix(']'))
                .map(str::to_owned)
        })
    })?;
    let line = nodes
        .lines()
        .find(|line| line.split_whitespace().next() == Some(target_id.as_str()))?;
    let address = line.split_whitespace().nth(1)?.split(['@', ',']).next()?;
    let (host, port) = address.rsplit_once(':')?;
    Some((host.trim_matches(['[', ']']).to_owned(), port.parse().ok()?))
}

/// The command's answer among the answers to `[ASKING, command]`: the one that
/// is not `ASKING`'s `OK` (none of the store's commands answers a plain `OK`).
/// fred 10.1 was seen to hand a pipeline's answers back out of order when one of
/// them is an error, so the position is not trusted; two `OK`s (or anything
/// else unexpected) give `None`, and the store's retry loop sends the batch again.
fn command_answer(
    answers: Vec<std::result::Result<Value, FredError>>,
) -> Option<std::result::Result<Value, FredError>> {
    let is_ok = |answer: &std::result::Result<Value, FredError>| matches!(answer, Ok(Value::String(text)) if &**text == "OK");
    let mut others: Vec<_> = answers.into_iter().filter(|a| !is_ok(a)).collect();
    (others.len() == 1).then(|| others.pop()).flatten()
}

impl RedisStore {
    /// Sends again, each to the node importing its slot and right after `ASKING`,
    /// the commands of `batch` whose replies say fred looped on redirections.
    /// Replies of commands that cannot be helped this way are left as they are
    /// (the store's retry loop sends the batch again).
    pub(crate) async fn follow_asks(
        &self,
        batch: &Batch,
        send_source: bool,
        replies: &mut [std::result::Result<Value, FredError>],
        options: &Options,
    ) {
        let looping: Vec<usize> = replies
            .iter()
            .enumerate()
            .filter(|(_, reply)| matches!(reply, Err(e) if is_redirection_loop(e)))
            .map(|(index, _)| index)
            .collect();
        if looping.is_empty() {
            return;
        }
        let commands = batch.commands(send_source);
        for index in looping {
            let (Some(slot), Some((command, args))) = (batch.slot_of(index), commands.get(index))
            else {
                continue;
            };
            let Some(target) = self.importing_node_of(slot, options).await else {
                continue;
            };
            tracing::debug!(slot, node = %target, "following ASK to the node importing the slot");
            let pinned = Options {
                cluster_node: Some(target),
                max_redirections: Some(0),
                ..options.clone()
            };
            let pipeline = self.pool.next().pipeline().with_options(&pinned);
            let asking = CustomCommand::new("ASKING", ClusterHash::Custom(slot), false);
            let _: std::result::Result<Value, _> =
                pipeline.custom(asking, Vec::<Value>::new()).await;
            let _: std::result::Result<Value, _> =
                pipeline.custom(command.clone(), args.clone()).await;
            let answers = pipeline.try_all::<Value>().await;
            if let (Some(reply), Some(answer)) = (replies.get_mut(index), command_answer(answers)) {
                *reply = answer;
            }
        }
    }

    /// The node importing `slot`, from `CLUSTER NODES` of the node fred routes
    /// the slot to.
    async fn importing_node_of(&self, slot: u16, options: &Options) -> Option<Server> {
        let command = CustomCommand::new("CLUSTER", ClusterHash::Custom(slot), false);
        let nodes: Value = self
            .pool
            .next()
            .with_options(options)
            .custom(command, vec![Value::from("NODES")])
            .await
            .ok()?;
        let text = crate::batch::to_text(nodes)?;
        let (host, port) = importing_node(&text, slot)?;
        Some(Server::new(host, port))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_importing_node_is_read_from_the_migrating_nodes_view() {
        let nodes = "\
aaa 127.0.0.1:7000@17000 myself,master - 0 0 1 connected 0-5460 [3516->-bbb]
bbb 127.0.0.1:7001@17001 master - 0 1700000000000 2 connected 5461-10922
ccc 127.0.0.1:7002@17002,host master - 0 1700000000000 3 connected 10923-16383
";
        assert_eq!(
            importing_node(nodes, 3516),
            Some(("127.0.0.1".into(), 7001))
        );
        assert_eq!(importing_node(nodes, 3517), None);
        assert_eq!(importing_node("garbage", 1), None);
    }

    #[test]
    fn the_command_answer_is_the_one_that_is_not_askings_ok() {
        let ok = || Ok(Value::from("OK"));
        let tryagain = || Err(FredError::new(ErrorKind::Unknown, "TRYAGAIN"));
        assert!(matches!(
            command_answer(vec![ok(), Ok(Value::Integer(3))]),
            Some(Ok(Value::Integer(3)))
        ));
        assert!(matches!(
            command_answer(vec![tryagain(), ok()]),
            Some(Err(_))
        ));
        assert!(command_answer(vec![ok(), ok()]).is_none());
        assert!(command_answer(vec![ok()]).is_none());
    }
}
