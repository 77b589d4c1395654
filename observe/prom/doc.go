// Package prom records reliablemq's [observe] events and handler timings as
// Prometheus metrics, with the official client (client_golang). It is an
// optional subpackage: the core packages never import it, so programs that
// do not use it do not link the Prometheus client.
//
// # What it records
//
// [New] registers four collectors on the registerer it is given:
//
//	reliablemq_events_total{kind,topic,group,reason}          counter
//	reliablemq_send_duration_seconds{topic,outcome}           histogram
//	reliablemq_handle_duration_seconds{topic,group,result}    histogram
//	reliablemq_handlers_in_flight{topic,group}                gauge
//
// events_total counts every [observe.Event] by its [observe.Kind]; group is
// empty for producer and outbox events, reason is empty when the event has
// none. send_duration_seconds observes the Duration of each
// [observe.SendDone] event that has one (an event with a zero Duration is
// counted but not timed); outcome is "ok" for a successful send, otherwise
// the event's Reason ("transient", "permanent", "outcome unknown",
// "not durable"), or "error" when the Reason is empty.
// handle_duration_seconds is the time from the consumer's call of the
// Handle hook to its call of the returned end function, with result "ok"
// or "error"; handlers_in_flight is the number of handlers between the two.
//
// # Label cardinality
//
// Labels are bounded by the deployment: topics and consumer groups are
// configured names, kinds are the [observe] constants, and reasons and
// outcomes are the small fixed vocabularies documented on those constants.
// A message key, a message id, an attempt number or an error text is never
// a label: each would create a new series per message. A caller that
// reports free text in [observe.Event.Reason] breaks this bound, which is
// why the core packages report only the documented reasons.
//
// # Failure modes
//
// [New] returns an error, and registers nothing, when the registerer
// refuses a collector (most often [prometheus.AlreadyRegisteredError],
// because New already ran on that registry: call it once per registry and
// share the [observe.Hooks]) or when an option is invalid (histogram
// buckets not strictly increasing). Once built, the hooks never fail a
// send or a message and never panic: a label value that is not valid UTF-8
// is repaired (invalid bytes become U+FFFD) before it is used. If a
// consumer never calls the end function it got from Handle,
// handlers_in_flight stays raised and that handler is never timed; calling
// it more than once records it once.
//
// # Concurrency
//
// The hooks are safe for concurrent use and do not block beyond the
// client's own atomic updates.
//
// # Usage
//
//	reg := prometheus.NewRegistry()
//	promHooks, err := prom.New(reg)
//	if err != nil {
//		return err
//	}
//	hooks := observe.Join(promHooks, otel.New())
//	// pass hooks to producer.WithHooks, outbox.WithHooks and consumer.WithHooks,
//	// and serve reg with promhttp.HandlerFor(reg, promhttp.HandlerOpts{}).
package prom
