//! One ldk-node on regtest, driven over stdin/stdout for the asyncreceive interop tests.
//!
//! Protocol: one command per line on stdin, one JSON line per command on stdout:
//! `{"ok": true, "result": ...}` or `{"ok": false, "error": "..."}`. ldk-node logs to
//! `<storage_dir>/ldk_node.log`; this program's own notes (events) go to stderr.
//!
//! Commands:
//!   start <server|client|none> <storage_dir> <listen_port> <bitcoind_rpc_port> <rpcuser> <rpcpass>
//!   node_id | new_address | balances | sync | list_channels | list_peers
//!   connect <node_id> <host:port>
//!   open_channel | open_announced_channel <node_id> <host:port> <sats> [push_msat]
//!   graph_nodes                                            -> node ids in our network graph
//!   blinded_paths_for_async_recipient <recipient_id_hex>   -> hex (u16 count || paths)
//!   set_paths_to_static_invoice_server <hex>               (same encoding)
//!   async_offer                                            -> "lno1..." or an error while not ready
//!   pay_offer <lno1...> <amount_msat> [payer_note words]   -> payment id (hex); Bolt12Payment::send_using_amount
//!   list_payments                                          -> lightning payments (id, direction, status, ...)
//!   stop

use std::io::{BufRead, Write};
use std::str::FromStr;
use std::sync::Arc;

use ldk_node::bitcoin::hex::{DisplayHex, FromHex};
use ldk_node::bitcoin::secp256k1::PublicKey;
use ldk_node::bitcoin::Network;
use ldk_node::config::{AsyncPaymentsRole, Config};
use ldk_node::lightning::blinded_path::message::BlindedMessagePath;
use ldk_node::lightning::ln::msgs::SocketAddress;
use ldk_node::lightning::offers::offer::Offer;
use ldk_node::payment::{PaymentDirection, PaymentKind, PaymentStatus};
use ldk_node::lightning::util::ser::{Readable, Writeable};
use ldk_node::logger::LogLevel;
use ldk_node::{Builder, Node};
use serde_json::{json, Value};

type Res = Result<Value, String>;

fn arg<'a>(args: &[&'a str], i: usize, name: &str) -> Result<&'a str, String> {
	args.get(i).copied().ok_or_else(|| format!("missing argument <{}>", name))
}

fn pubkey(s: &str) -> Result<PublicKey, String> {
	PublicKey::from_str(s).map_err(|e| format!("bad node id {}: {}", s, e))
}

fn addr(s: &str) -> Result<SocketAddress, String> {
	SocketAddress::from_str(s).map_err(|e| format!("bad address {}: {:?}", s, e))
}

fn start(args: &[&str]) -> Result<Arc<Node>, String> {
	let role = match arg(args, 0, "role")? {
		"server" => Some(AsyncPaymentsRole::Server),
		"client" => Some(AsyncPaymentsRole::Client),
		"none" => None,
		r => return Err(format!("unknown role {}", r)),
	};
	let dir = arg(args, 1, "storage_dir")?.to_string();
	let port: u16 = arg(args, 2, "listen_port")?.parse().map_err(|e| format!("listen_port: {}", e))?;
	let rpc_port: u16 =
		arg(args, 3, "bitcoind_rpc_port")?.parse().map_err(|e| format!("rpc_port: {}", e))?;
	let (user, pass) = (arg(args, 4, "rpcuser")?, arg(args, 5, "rpcpass")?);

	let mut config = Config::default();
	config.network = Network::Regtest;
	// Channels from the test's CLN node need no on-chain reserve on our side.
	if let Some(anchors) = config.anchor_channels_config.as_mut() {
		anchors.per_channel_reserve_sats = 0;
	}
	let mut builder = Builder::from_config(config);
	builder.set_storage_dir_path(dir.clone());
	builder.set_filesystem_logger(Some(format!("{}/ldk_node.log", dir)), Some(LogLevel::Trace));
	builder.set_chain_source_bitcoind_rpc("127.0.0.1".into(), rpc_port, user.into(), pass.into());
	builder
		.set_listening_addresses(vec![addr(&format!("127.0.0.1:{}", port))?])
		.map_err(|e| format!("{:?}", e))?;
	// A server must be able to announce (ldk-node checks alias + listening address).
	builder.set_node_alias("ldk-interop".into()).map_err(|e| format!("{:?}", e))?;
	builder.set_async_payments_role(role).map_err(|e| format!("{:?}", e))?;
	let node = Arc::new(builder.build().map_err(|e| format!("build: {:?}", e))?);
	node.start().map_err(|e| format!("start: {:?}", e))?;

	// Drain user-facing events (ldk-node handles the protocol ones itself) and note them on stderr.
	let n = Arc::clone(&node);
	std::thread::spawn(move || loop {
		let ev = n.wait_next_event();
		eprintln!("EVENT {:?}", ev);
		let _ = n.event_handled();
	});
	Ok(node)
}

fn run(node: &Option<Arc<Node>>, cmd: &str, args: &[&str]) -> Res {
	let node = node.as_ref().ok_or("node not started")?;
	let e = |x: ldk_node::NodeError| format!("{:?}", x);
	match cmd {
		"node_id" => Ok(json!(node.node_id().to_string())),
		"new_address" => Ok(json!(node.onchain_payment().new_address().map_err(e)?.to_string())),
		"balances" => {
			let b = node.list_balances();
			Ok(json!({
				"total_onchain_sats": b.total_onchain_balance_sats,
				"spendable_onchain_sats": b.spendable_onchain_balance_sats,
				"anchor_reserve_sats": b.total_anchor_channels_reserve_sats,
				"lightning_sats": b.total_lightning_balance_sats,
			}))
		},
		"sync" => node.sync_wallets().map(|_| json!(null)).map_err(e),
		"connect" => {
			let (id, a) = (pubkey(arg(args, 0, "node_id")?)?, addr(arg(args, 1, "host:port")?)?);
			node.connect(id, a, true).map(|_| json!(null)).map_err(e)
		},
		"open_channel" | "open_announced_channel" => {
			let (id, a) = (pubkey(arg(args, 0, "node_id")?)?, addr(arg(args, 1, "host:port")?)?);
			let sats: u64 = arg(args, 2, "sats")?.parse().map_err(|x| format!("sats: {}", x))?;
			let push = match args.get(3) {
				Some(p) => Some(p.parse::<u64>().map_err(|x| format!("push_msat: {}", x))?),
				None => None,
			};
			let id = if cmd == "open_channel" {
				node.open_channel(id, a, sats, push, None)
			} else {
				node.open_announced_channel(id, a, sats, push, None)
			}
			.map_err(e)?;
			Ok(json!(id.0.to_string()))
		},
		"list_channels" => Ok(Value::Array(
			node.list_channels()
				.iter()
				.map(|c| {
					json!({
						"channel_id": c.channel_id.to_string(),
						"counterparty_node_id": c.counterparty_node_id.to_string(),
						"short_channel_id": c.short_channel_id,
						"channel_value_sats": c.channel_value_sats,
						"outbound_capacity_msat": c.outbound_capacity_msat,
						"inbound_capacity_msat": c.inbound_capacity_msat,
						"is_outbound": c.is_outbound,
						"is_channel_ready": c.is_channel_ready,
						"is_usable": c.is_usable,
						"confirmations": c.confirmations,
					})
				})
				.collect(),
		)),
		"graph_nodes" => Ok(Value::Array(
			node.network_graph().list_nodes().iter().map(|n| json!(n.to_string())).collect(),
		)),
		"list_peers" => Ok(Value::Array(
			node.list_peers()
				.iter()
				.map(|p| {
					json!({"node_id": p.node_id.to_string(), "address": p.address.to_string(),
					       "is_connected": p.is_connected})
				})
				.collect(),
		)),
		"blinded_paths_for_async_recipient" => {
			let id = Vec::<u8>::from_hex(arg(args, 0, "recipient_id_hex")?).map_err(|x| x.to_string())?;
			let paths = node.bolt12_payment().blinded_paths_for_async_recipient(id).map_err(e)?;
			Ok(json!(paths.encode().to_lower_hex_string()))
		},
		"set_paths_to_static_invoice_server" => {
			let bytes = Vec::<u8>::from_hex(arg(args, 0, "hex")?).map_err(|x| x.to_string())?;
			let paths: Vec<BlindedMessagePath> =
				Readable::read(&mut &bytes[..]).map_err(|x| format!("decode paths: {:?}", x))?;
			node.bolt12_payment().set_paths_to_static_invoice_server(paths).map_err(e)?;
			Ok(json!(null))
		},
		"pay_offer" => {
			let offer = Offer::from_str(arg(args, 0, "offer")?).map_err(|x| format!("bad offer: {:?}", x))?;
			let amount: u64 =
				arg(args, 1, "amount_msat")?.parse().map_err(|x| format!("amount_msat: {}", x))?;
			let note = if args.len() > 2 { Some(args[2..].join(" ")) } else { None };
			let id = node.bolt12_payment().send_using_amount(&offer, amount, None, note, None).map_err(e)?;
			Ok(json!(id.0.to_lower_hex_string()))
		},
		"list_payments" => Ok(Value::Array(
			node.list_payments()
				.iter()
				.filter(|p| !matches!(p.kind, PaymentKind::Onchain { .. }))
				.map(|p| {
					let (kind, hash, preimage, offer_id) = match &p.kind {
						PaymentKind::Bolt12Offer { hash, preimage, offer_id, .. } => {
							("bolt12_offer", hash.map(|h| h.0), preimage.map(|x| x.0), Some(offer_id.0))
						},
						PaymentKind::Spontaneous { hash, preimage } => {
							("spontaneous", Some(hash.0), preimage.map(|x| x.0), None)
						},
						PaymentKind::Bolt11 { hash, preimage, .. } => {
							("bolt11", Some(hash.0), preimage.map(|x| x.0), None)
						},
						_ => ("other", None, None, None),
					};
					json!({
						"id": p.id.0.to_lower_hex_string(),
						"kind": kind,
						"direction": match p.direction {
							PaymentDirection::Inbound => "inbound",
							PaymentDirection::Outbound => "outbound",
						},
						"status": match p.status {
							PaymentStatus::Pending => "pending",
							PaymentStatus::Succeeded => "succeeded",
							PaymentStatus::Failed => "failed",
						},
						"amount_msat": p.amount_msat,
						"fee_paid_msat": p.fee_paid_msat,
						"payment_hash": hash.map(|h| h.to_lower_hex_string()),
						"preimage": preimage.map(|h| h.to_lower_hex_string()),
						"offer_id": offer_id.map(|h| h.to_lower_hex_string()),
					})
				})
				.collect(),
		)),
		"async_offer" => Ok(json!(node.bolt12_payment().receive_async().map_err(e)?.to_string())),
		_ => Err(format!("unknown command {}", cmd)),
	}
}

fn main() {
	let stdin = std::io::stdin();
	let mut out = std::io::stdout();
	let mut node: Option<Arc<Node>> = None;
	for line in stdin.lock().lines() {
		let line = match line {
			Ok(l) => l,
			Err(_) => break,
		};
		let words: Vec<&str> = line.split_whitespace().collect();
		let Some((&cmd, args)) = words.split_first() else { continue };
		let res = match cmd {
			"start" if node.is_some() => Err("already started".to_string()),
			"start" => start(args).map(|n| {
				node = Some(n);
				json!(null)
			}),
			"stop" => {
				let r = node.as_ref().map(|n| n.stop());
				let reply = json!({"ok": true, "result": format!("{:?}", r)});
				let _ = writeln!(out, "{}", reply);
				let _ = out.flush();
				std::process::exit(0);
			},
			_ => run(&node, cmd, args),
		};
		let reply = match res {
			Ok(v) => json!({"ok": true, "result": v}),
			Err(err) => json!({"ok": false, "error": err}),
		};
		let _ = writeln!(out, "{}", reply);
		let _ = out.flush();
	}
	if let Some(n) = node {
		let _ = n.stop();
	}
}
