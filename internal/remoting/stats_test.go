package remoting

import (
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"testing"
)

// The testdata bodies were answered by real 4.9.4 and 5.5.0 brokers to a
// group that had pulled and committed 2 of the 5 messages on queue 0 of a
// 2-queue topic.

func readTestdata(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestDecodeConsumeStatsFromRealBrokers(t *testing.T) {
	t.Parallel()
	for _, v := range []string{"4.9.4", "5.5.0"} {
		t.Run(v, func(t *testing.T) {
			t.Parallel()
			s, err := DecodeConsumeStats(readTestdata(t, "consume_stats_"+v+".json"))
			if err != nil {
				t.Fatal(err)
			}
			if len(s.Queues) != 2 {
				t.Fatalf("%d queues, want 2: %+v", len(s.Queues), s)
			}
			q0, q1 := s.Queues[0], s.Queues[1]
			if q0.Topic != "ProbeLag" || q0.BrokerName != "broker-a" || q0.QueueID != 0 || q0.BrokerOffset != 5 ||
				q0.ConsumerOffset != 2 || q0.Lag() != 3 || q0.LastTimestamp <= 0 {
				t.Errorf("queue 0: %+v", q0)
			}
			if q1.QueueID != 1 || q1.BrokerOffset != 0 || q1.ConsumerOffset != 0 || q1.Lag() != 0 || q1.LastTimestamp != 0 {
				t.Errorf("queue 1: %+v", q1)
			}
			empty, err := DecodeConsumeStats(readTestdata(t, "consume_stats_unknown_group_"+v+".json"))
			if err != nil || len(empty.Queues) != 0 {
				t.Errorf("unknown group: %+v, %v", empty, err)
			}
		})
	}
}

func TestDecodeConsumeStatsKeyForms(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ name, body string }{
		{"object key", `{"consumeTps":1.5,"offsetTable":{{"brokerName":"b","queueId":3,"topic":"T"}:{"brokerOffset":9,"consumerOffset":4,"lastTimestamp":7}}}`},
		{"string key", `{"offsetTable":{"{\"brokerName\":\"b\",\"queueId\":3,\"topic\":\"T\"}":{"brokerOffset":9,"consumerOffset":4,"lastTimestamp":7}},"consumeTps":1.5}`},
		{"spaces and braces in names", ` { "consumeTps" : 1.5 , "offsetTable" : { { "brokerName" : "b" , "queueId" : 3 , "topic" : "T" } : { "brokerOffset" : 9 , "consumerOffset" : 4 , "lastTimestamp" : 7 , "x" : "}{\"" } } } `},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s, err := DecodeConsumeStats([]byte(tc.body))
			if err != nil {
				t.Fatal(err)
			}
			want := &ConsumeStats{ConsumeTPS: 1.5, Queues: []QueueStats{{Topic: "T", BrokerName: "b", QueueID: 3,
				BrokerOffset: 9, ConsumerOffset: 4, LastTimestamp: 7}}}
			if !reflect.DeepEqual(s, want) {
				t.Fatalf("got %+v, want %+v", s, want)
			}
		})
	}
	for _, bad := range []string{``, `[]`, `{`, `{"offsetTable":{{"topic":"T"}}}`, `{"offsetTable":{{"topic":"T"}:{"brokerOffset":"x"}}}`,
		`{"offsetTable":{}} x`, `{"consumeTps":"fast"}`, `{"offsetTable":{{"topic":"T":{}}}`} {
		if s, err := DecodeConsumeStats([]byte(bad)); err == nil {
			t.Errorf("%q decoded to %+v, want an error", bad, s)
		}
	}
}

func TestDecodeSubscriptionGroupsFromRealBrokers(t *testing.T) {
	t.Parallel()
	for _, v := range []string{"4.9.4", "5.5.0"} {
		names, err := DecodeSubscriptionGroups(readTestdata(t, "subscription_groups_"+v+".json"))
		if err != nil {
			t.Fatal(v, err)
		}
		var app []string
		for _, n := range names {
			if !IsSystemGroup(n) {
				app = append(app, n)
			}
		}
		if !slices.Equal(app, []string{"ProbeLagGroup"}) {
			t.Errorf("%s: application groups %v of %v, want [ProbeLagGroup]", v, app, names)
		}
	}
}

func TestDecodeClusterInfoFromRealBrokers(t *testing.T) {
	t.Parallel()
	for v, addr := range map[string]string{"4.9.4": "127.0.0.1:40911", "5.5.0": "127.0.0.1:50911"} {
		bs, err := DecodeClusterInfo(readTestdata(t, "cluster_info_"+v+".json"))
		if err != nil {
			t.Fatal(v, err)
		}
		want := []Broker{{Cluster: "DefaultCluster", Name: "broker-a", Addr: addr}}
		if !reflect.DeepEqual(bs, want) {
			t.Errorf("%s: %+v, want %+v", v, bs, want)
		}
	}
}

func FuzzConsumeStats(f *testing.F) {
	for _, n := range []string{"consume_stats_4.9.4.json", "consume_stats_5.5.0.json", "consume_stats_unknown_group_4.9.4.json"} {
		f.Add(readTestdata(f, n))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		s, err := DecodeConsumeStats(body)
		if err != nil {
			return
		}
		// What decodes re-encodes to the same stats.
		again, err := DecodeConsumeStats(EncodeConsumeStats(s))
		if err != nil {
			t.Fatalf("re-encoded stats do not decode: %v", err)
		}
		if len(s.Queues) == 0 {
			s.Queues = nil
		}
		if len(again.Queues) == 0 {
			again.Queues = nil
		}
		if !reflect.DeepEqual(s, again) {
			t.Fatalf("round trip: %+v became %+v", s, again)
		}
	})
}
