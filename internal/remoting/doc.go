// Package remoting encodes and decodes RocketMQ's remoting protocol as the
// official Go client v2.1.2 and an Apache RocketMQ 4.9.4 broker speak it:
// length-prefixed frames with a JSON header, the property string, the
// stored-message layout returned by pulls, the client's batch body and the
// offset message id.
//
// Decoders never panic on malformed input: they return an error. Every
// Encode/Decode pair round-trips (decode(encode(x)) == x), which the fuzz
// targets in this package check.
package remoting
