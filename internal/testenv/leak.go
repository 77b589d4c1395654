package testenv

import "go.uber.org/goleak"

// ClientLeakOptions are the goleak options for goroutines the official
// client v2.1.2 leaves behind after Shutdown, each by name: its background
// loops sleep 1 to 10 s before they first look at the done channel
// (internal/client.go Start); the push consumer's stats goroutines never
// stop (#1147); pulls in flight wait out their 30 s timeout; orderly queue
// loops finish their sleep; the transaction producer's check-back loop
// never ends; a package-level cache starts a janitor at init; and each
// client's name server connection is never closed (the name server's
// remoting client has no shutdown path in v2.1.2), so its reader waits
// until the name server drops it: rmqtest does at Close, a real name
// server only after its idle timeout. None of
// them is ours. Packages whose tests run push consumers (consumer,
// reconcile, the drills) do not verify leaks package-wide: a push consumer
// shut down mid-rebalance leaves still other client goroutines, in numbers
// and places that depend on timing.
func ClientLeakOptions() []goleak.Option {
	const c = "github.com/apache/rocketmq-client-go/v2/"
	return []goleak.Option{
		goleak.IgnoreAnyFunction(c + "consumer.(*statsItemSet).init.func1"),
		goleak.IgnoreAnyFunction(c + "consumer.(*statsItemSet).init.func2"),
		goleak.IgnoreAnyFunction(c + "consumer.(*statsItemSet).init.func3"),
		goleak.IgnoreAnyFunction(c + "consumer.(*statsItemSet).init.func4"),
		goleak.IgnoreAnyFunction(c + "consumer.(*statsItemSet).init.func5"),
		goleak.IgnoreAnyFunction(c + "consumer.(*statsItemSet).init.func6"),
		goleak.IgnoreAnyFunction(c + "consumer.(*pushConsumer).Start.func1.1.1"),
		goleak.IgnoreAnyFunction(c + "consumer.(*pushConsumer).Start.func1.2"), // sleeps ConsumeTimeout (15 min) first
		goleak.IgnoreAnyFunction(c + "consumer.(*pushConsumer).Start.func1.3"),
		goleak.IgnoreAnyFunction(c + "consumer.(*pushConsumer).consumeMessageOrderly"),
		goleak.IgnoreAnyFunction(c + "consumer.(*pushConsumer).consumeMessageConcurrently.func1"),
		goleak.IgnoreAnyFunction(c + "producer.(*transactionProducer).checkTransactionState"),
		goleak.IgnoreAnyFunction("github.com/patrickmn/go-cache.(*janitor).Run"),
		goleak.IgnoreAnyFunction(c + "internal/remote.(*remotingClient).receiveResponse"),
		goleak.IgnoreAnyFunction("github.com/apache/rocketmq-client-go/v2/internal.(*rmqClient).Start.func1.1"),
		goleak.IgnoreAnyFunction("github.com/apache/rocketmq-client-go/v2/internal.(*rmqClient).Start.func1.2"),
		goleak.IgnoreAnyFunction("github.com/apache/rocketmq-client-go/v2/internal.(*rmqClient).Start.func1.3"),
		goleak.IgnoreAnyFunction("github.com/apache/rocketmq-client-go/v2/internal.(*rmqClient).Start.func1.4"),
		goleak.IgnoreAnyFunction("github.com/apache/rocketmq-client-go/v2/internal.(*rmqClient).Start.func1.5"),
	}
}
