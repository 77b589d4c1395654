// Package rmqtest is an in-process Apache RocketMQ name server and broker
// for tests: the unmodified official Go client
// (github.com/apache/rocketmq-client-go/v2 v2.1.2) talks to it over TCP on
// loopback, with no Docker and no JVM.
//
// It reproduces what a 4.9.4 broker does in every field the client reads:
// routes (including the TBW102 auto-create path), sync, oneway and batch
// sends, heartbeats and consumer groups with NOTIFY_CONSUMER_IDS_CHANGED,
// consumer offsets, pulls with long polling and tag filtering, consumer
// send-back to %RETRY% and %DLQ% topics (the DLQ created read-write, as on
// 4.9.4 and 5.x; write-only, as on older 4.x, with [WithWriteOnlyDLQ]), delay levels, orderly queue locks, and transactional half messages
// with check-backs.
//
// Time: delays, retries, transaction check-backs and lock expiry run on the
// broker's own clock, which [Broker.Advance] moves forward, so a test never
// sleeps for a delay level. Held pulls and the client's own timers use real
// time.
//
// Faults: [Broker.Inject] makes the next requests of one code fail with a
// response code, lose their reply after being processed (a duplicate on
// the wire), or be answered late; [Broker.Down] and [Broker.Up] simulate an
// outage with the store kept.
//
// Usage:
//
//	b := rmqtest.Run(t) // closed when the test ends
//	p, _ := rocketmq.NewProducer(producer.WithNameServer([]string{b.NamesrvAddr()}))
//
// Everything is kept in memory; nothing is written to disk. A Broker's
// methods are safe for concurrent use, and Close waits for every goroutine
// it started.
package rmqtest
