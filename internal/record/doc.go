// Package record is a recording TCP proxy for RocketMQ's remoting
// protocol. It sits between clients (the official Go client, or raw
// remoting code) and a real name server and brokers, forwards every frame
// and writes each one it sees as a line of a JSON-lines transcript, in
// the format of the shared golden transcripts (see the README next to
// them): a meta line, connect and close events, notes, and one line per
// frame with its header fields, the request code a response answers
// (matched by connection and opaque) and the exact body.
//
// What it records: every frame in both directions on every connection
// made through it, decoded from a copy with the remoting codec; the
// original bytes are forwarded untouched. Message properties carried in
// the header are shown decoded too, and stored-message bodies (pull,
// query, view) are listed message by message, as extra views that are
// not on the wire.
//
// What it rewrites: only name server replies to GET_ROUTEINFO_BY_TOPIC.
// Their body lists broker addresses; for each real broker address seen the
// proxy starts (once, lazily) a broker-side listener, and forwards the
// body with the real address replaced by that listener's, so that clients
// reach the brokers through the proxy as well. The transcript keeps the
// body the name server sent and says on the same line that it was
// rewritten. Nothing else is changed: in particular store hosts inside
// stored messages still name the real broker, so a client that connects
// to a message's store host (a consumer's send-back) bypasses the proxy.
//
// The proxy is for capturing exchanges with a real broker in tests and by
// hand (the "reliablemq record" command); it is not meant for production
// traffic: it buffers whole frames, decodes every one of them and writes
// each body out in full.
package record
