package rmqtest

import (
	"encoding/json"
	"slices"
	"strings"
	"time"

	"github.com/seed157d4c4d/reliablemq/internal/remoting"
)

type subscription struct {
	topic string
	all   bool
	codes map[int64]bool
}

func (s *subscription) matches(m *message) bool {
	return s.all || s.codes[m.tagsCode]
}

func parseSubscription(topic, expr string, tags []string) *subscription {
	s := &subscription{topic: topic}
	expr = strings.TrimSpace(expr)
	if expr == "" || expr == "*" {
		s.all = true
		return s
	}
	if len(tags) == 0 {
		for _, t := range strings.Split(expr, "||") {
			if t = strings.TrimSpace(t); t != "" {
				tags = append(tags, t)
			}
		}
	}
	s.codes = make(map[int64]bool, len(tags))
	for _, t := range tags {
		s.codes[remoting.TagsCode(t)] = true
	}
	return s
}

type member struct {
	clientID string
	topics   []string // sorted
}

type group struct {
	members map[*conn]*member
	subs    map[string]*subscription
}

type heartbeatBody struct {
	ClientID        string `json:"clientID"`
	ProducerDataSet []struct {
		GroupName string `json:"groupName"`
	} `json:"producerDataSet"`
	ConsumerDataSet []struct {
		GroupName           string `json:"groupName"`
		SubscriptionDataSet []struct {
			Topic     string   `json:"topic"`
			SubString string   `json:"subString"`
			TagsSet   []string `json:"tagsSet"`
		} `json:"subscriptionDataSet"`
	} `json:"consumerDataSet"`
}

func (b *Broker) heartbeat(c *conn, req *remoting.Command) *remoting.Command {
	var hb heartbeatBody
	if err := json.Unmarshal(req.Body, &hb); err != nil {
		return response(remoting.CodeSystemError, "malformed heartbeat body: "+err.Error())
	}
	b.mu.Lock()
	for _, p := range hb.ProducerDataSet {
		set := b.producers[p.GroupName]
		if set == nil {
			set = make(map[*conn]struct{})
			b.producers[p.GroupName] = set
		}
		set[c] = struct{}{}
	}
	for _, cd := range hb.ConsumerDataSet {
		b.ensureTopicLocked(retryPrefix+cd.GroupName, 1, permRead|permWrite)
		b.subGroups[cd.GroupName] = struct{}{}
		g := b.groups[cd.GroupName]
		if g == nil {
			g = &group{members: make(map[*conn]*member), subs: make(map[string]*subscription)}
			b.groups[cd.GroupName] = g
		}
		subs := make(map[string]*subscription, len(cd.SubscriptionDataSet))
		topics := make([]string, 0, len(cd.SubscriptionDataSet))
		for _, sd := range cd.SubscriptionDataSet {
			subs[sd.Topic] = parseSubscription(sd.Topic, sd.SubString, sd.TagsSet)
			topics = append(topics, sd.Topic)
		}
		slices.Sort(topics)
		old := g.members[c]
		changed := old == nil || !slices.Equal(old.topics, topics)
		g.members[c] = &member{clientID: hb.ClientID, topics: topics}
		g.subs = subs
		if changed {
			all := make([]*conn, 0, len(g.members))
			for mc := range g.members {
				all = append(all, mc)
			}
			b.notifyLater(cd.GroupName, all)
		}
	}
	b.mu.Unlock()
	return ok(nil, nil)
}

// notifyLater sends NOTIFY_CONSUMER_IDS_CHANGED to conns after the current
// request's reply; writes happen outside the broker lock.
func (b *Broker) notifyLater(group string, conns []*conn) {
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		for _, c := range conns {
			b.send(c, remoting.ReqNotifyConsumerIDsChanged, map[string]string{"consumerGroup": group}, nil)
		}
	}()
}

// dropConn forgets a closed connection: it leaves its groups (the rest of
// each group is notified), its producer groups and its held pulls.
func (b *Broker) dropConn(c *conn) {
	b.mu.Lock()
	defer b.mu.Unlock()
	delete(b.conns, c)
	for _, set := range b.producers {
		delete(set, c)
	}
	for name, g := range b.groups {
		if _, in := g.members[c]; !in {
			continue
		}
		delete(g.members, c)
		if len(g.members) == 0 {
			delete(b.groups, name)
			continue
		}
		rest := make([]*conn, 0, len(g.members))
		for mc := range g.members {
			rest = append(rest, mc)
		}
		if !b.closed {
			b.notifyLater(name, rest)
		}
	}
	for k, list := range b.held {
		b.held[k] = slices.DeleteFunc(list, func(h *heldPull) bool { return h.c == c })
	}
}

func (b *Broker) consumerList(req *remoting.Command) *remoting.Command {
	name := req.ExtFields["consumerGroup"]
	b.mu.Lock()
	g := b.groups[name]
	var ids []string
	if g != nil {
		for _, m := range g.members {
			if !slices.Contains(ids, m.clientID) {
				ids = append(ids, m.clientID)
			}
		}
	}
	b.mu.Unlock()
	if len(ids) == 0 {
		return response(remoting.CodeSystemError, "no consumer for this group, "+name)
	}
	slices.Sort(ids)
	body, err := json.Marshal(map[string][]string{"consumerIdList": ids})
	if err != nil {
		return response(remoting.CodeSystemError, err.Error())
	}
	return ok(nil, body)
}

type mqJSON struct {
	Topic      string `json:"topic"`
	BrokerName string `json:"brokerName"`
	QueueID    int32  `json:"queueId"`
}

type lockBody struct {
	ConsumerGroup string   `json:"consumerGroup"`
	ClientID      string   `json:"clientId"`
	MQSet         []mqJSON `json:"mqSet"`
}

type lockEntry struct {
	clientID string
	at       time.Time
}

func (b *Broker) lockBatch(req *remoting.Command) *remoting.Command {
	var lb lockBody
	if err := json.Unmarshal(req.Body, &lb); err != nil {
		return response(remoting.CodeSystemError, "malformed lock body: "+err.Error())
	}
	now := b.Now()
	locked := []mqJSON{}
	b.mu.Lock()
	table := b.locks[lb.ConsumerGroup]
	if table == nil {
		table = make(map[queueKey]*lockEntry)
		b.locks[lb.ConsumerGroup] = table
	}
	for _, mq := range lb.MQSet {
		k := queueKey{mq.Topic, mq.QueueID}
		e := table[k]
		if e == nil || e.clientID == lb.ClientID || now.Sub(e.at) > b.opts.lockExpiry {
			table[k] = &lockEntry{clientID: lb.ClientID, at: now}
			locked = append(locked, mq)
		}
	}
	b.mu.Unlock()
	body, err := json.Marshal(map[string][]mqJSON{"lockOKMQSet": locked})
	if err != nil {
		return response(remoting.CodeSystemError, err.Error())
	}
	return ok(nil, body)
}

func (b *Broker) unlockBatch(req *remoting.Command) *remoting.Command {
	var lb lockBody
	if err := json.Unmarshal(req.Body, &lb); err != nil {
		return response(remoting.CodeSystemError, "malformed unlock body: "+err.Error())
	}
	b.mu.Lock()
	table := b.locks[lb.ConsumerGroup]
	for _, mq := range lb.MQSet {
		k := queueKey{mq.Topic, mq.QueueID}
		if e := table[k]; e != nil && e.clientID == lb.ClientID {
			delete(table, k)
		}
	}
	b.mu.Unlock()
	return ok(nil, nil)
}
