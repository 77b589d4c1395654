package remoting

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// Topic permission bits.
const (
	PermWrite = 2
	PermRead  = 4
)

// adminTimeout bounds one admin exchange when the caller's ctx has no
// earlier deadline.
const adminTimeout = 5 * time.Second

// Route is a topic's route as a name server answers GET_ROUTEINFO_BY_TOPIC.
type Route struct {
	BrokerDatas []struct {
		BrokerName  string            `json:"brokerName"`
		BrokerAddrs map[string]string `json:"brokerAddrs"`
	} `json:"brokerDatas"`
	QueueDatas []struct {
		BrokerName     string `json:"brokerName"`
		Perm           int    `json:"perm"`
		ReadQueueNums  int    `json:"readQueueNums"`
		WriteQueueNums int    `json:"writeQueueNums"`
	} `json:"queueDatas"`
}

// MasterAddr is the address of brokerName's master (broker id 0), or "".
func (r *Route) MasterAddr(brokerName string) string {
	for _, b := range r.BrokerDatas {
		if b.BrokerName == brokerName {
			return b.BrokerAddrs["0"]
		}
	}
	return ""
}

// ErrNoRoute is returned by [FetchRoute] for a topic the name server does
// not know.
var ErrNoRoute = errors.New("remoting: topic has no route")

// unquotedKey matches the integer map keys Java writes without quotes in
// brokerAddrs.
var unquotedKey = regexp.MustCompile(`([{,])(-?\d+):`)

// FetchRoute asks the name server at namesrv for topic's route.
func FetchRoute(ctx context.Context, namesrv, topic string) (*Route, error) {
	resp, err := invokeOnce(ctx, namesrv, &Command{Code: ReqGetRouteInfoByTopic,
		ExtFields: map[string]string{"topic": topic}})
	if err != nil {
		return nil, fmt.Errorf("route of %s: %w", topic, err)
	}
	if resp.Code == CodeTopicNotExist {
		return nil, fmt.Errorf("route of %s: %w", topic, ErrNoRoute)
	}
	if resp.Code != CodeSuccess {
		return nil, fmt.Errorf("route of %s: code %d %s", topic, resp.Code, resp.Remark)
	}
	var r Route
	if err := json.Unmarshal(unquotedKey.ReplaceAll(resp.Body, []byte(`$1"$2":`)), &r); err != nil {
		return nil, fmt.Errorf("route of %s: %w", topic, err)
	}
	return &r, nil
}

// UpdateTopic creates topic on the broker at broker, or updates its queue
// counts and permission (UPDATE_AND_CREATE_TOPIC), signed with creds.
func UpdateTopic(ctx context.Context, creds Credentials, broker, topic string, read, write, perm int) error {
	req := &Command{Code: ReqUpdateAndCreateTopic, ExtFields: map[string]string{
		"topic": topic, "defaultTopic": "TBW102", "readQueueNums": strconv.Itoa(read),
		"writeQueueNums": strconv.Itoa(write), "perm": strconv.Itoa(perm), "topicFilterType": "SINGLE_TAG",
		"topicSysFlag": "0", "order": "false",
	}}
	resp, err := invokeSigned(ctx, broker, req, creds)
	if err != nil {
		return fmt.Errorf("update topic %s on %s: %w", topic, broker, err)
	}
	if resp.Code != CodeSuccess {
		return fmt.Errorf("update topic %s on %s: code %d %s", topic, broker, resp.Code, resp.Remark)
	}
	return nil
}

// CreateTopic creates topic with queues read and write queues on every
// broker in brokers, signed with creds, and waits until every name server
// routes it to all of them (a consumer's Start fails on a real broker
// until then, auto-create or not). The wait is bounded by ctx and 30 s.
func CreateTopic(ctx context.Context, creds Credentials, namesrvs, brokers []string, topic string, queues int) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for _, b := range brokers {
		if err := UpdateTopic(ctx, creds, b, topic, queues, queues, PermRead|PermWrite); err != nil {
			return fmt.Errorf("create topic: %w", err)
		}
	}
	for _, ns := range namesrvs {
		if err := WaitRoute(ctx, ns, topic, brokers); err != nil {
			return fmt.Errorf("create topic: %w", err)
		}
	}
	return nil
}

// WaitRoute polls the name server until topic's route lists every broker
// in brokers (addresses), or ctx ends.
func WaitRoute(ctx context.Context, namesrv, topic string, brokers []string) error {
	for {
		r, err := FetchRoute(ctx, namesrv, topic)
		if err == nil && routesAll(r, brokers) {
			return nil
		}
		select {
		case <-ctx.Done():
			if err == nil {
				err = errors.New("not every broker registered it")
			}
			return fmt.Errorf("wait for route of %s: %w (%w)", topic, ctx.Err(), err)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func routesAll(r *Route, brokers []string) bool {
	for _, want := range brokers {
		found := false
		for _, b := range r.BrokerDatas {
			for _, addr := range b.BrokerAddrs {
				found = found || addr == want
			}
		}
		if !found {
			return false
		}
	}
	return true
}

// SplitAddrs splits a ";"- or ","-separated address list, as RocketMQ
// writes name server lists.
func SplitAddrs(s string) []string {
	return strings.FieldsFunc(s, func(r rune) bool { return r == ';' || r == ',' || r == ' ' })
}

func invokeOnce(ctx context.Context, addr string, req *Command) (*Command, error) {
	ctx, cancel := context.WithTimeout(ctx, adminTimeout)
	defer cancel()
	c, err := Dial(ctx, addr)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	return c.Invoke(ctx, req)
}

// MakeReadable reports whether topic has a route on the first name server
// in namesrvs that answers, and gives read-write permission to its queues
// on every master broker where they are not readable (older 4.x brokers
// create a %DLQ% topic write-only). It returns the names of the brokers
// it changed.
func MakeReadable(ctx context.Context, creds Credentials, namesrvs []string, topic string) (exists bool, changed []string, err error) {
	route, err := RouteOf(ctx, namesrvs, topic)
	if errors.Is(err, ErrNoRoute) {
		return false, nil, nil
	}
	if err != nil {
		return false, nil, err
	}
	for _, q := range route.QueueDatas {
		addr := route.MasterAddr(q.BrokerName)
		if q.Perm&PermRead != 0 || addr == "" {
			continue
		}
		if err := UpdateTopic(ctx, creds, addr, topic, q.ReadQueueNums, q.WriteQueueNums, PermRead|PermWrite); err != nil {
			return true, changed, err
		}
		changed = append(changed, q.BrokerName)
	}
	return true, changed, nil
}

// RouteOf returns topic's route from the first name server in namesrvs
// that answers; [ErrNoRoute] when it does not know the topic.
func RouteOf(ctx context.Context, namesrvs []string, topic string) (*Route, error) {
	var errs []error
	for _, ns := range namesrvs {
		r, err := FetchRoute(ctx, ns, topic)
		if err == nil || errors.Is(err, ErrNoRoute) {
			return r, err
		}
		errs = append(errs, fmt.Errorf("name server %s: %w", ns, err))
	}
	return nil, errors.Join(errs...)
}

// ACLRefusal reports whether a broker's answer text is an ACL refusal
// (4.x answers SYSTEM_ERROR with the AclException's text) and returns the
// broker's reason without the Java class and source line around it.
func ACLRefusal(text string) (reason string, refused bool) {
	_, reason, refused = strings.Cut(text, "AclException: ")
	reason, _, _ = strings.Cut(reason, ", org.apache.")
	return reason, refused
}

// ErrAccessDenied is returned by [CheckSubscribe] when the broker's ACL
// refuses the account; the broker's reason follows it.
var ErrAccessDenied = errors.New("access denied by the broker's ACL")

// ErrAccessUnverified is returned by [CheckSubscribe] when no broker
// routing the topic could be asked (no route, every broker unreachable).
var ErrAccessUnverified = errors.New("access could not be verified: no broker answered")

// CheckSubscribe sends every master broker routing topic, signed with creds,
// a pull for group of a queue that does not exist (PULL_MESSAGE): a broker
// with ACL on checks that the account has SUB on the topic and on the
// group, so an [ErrAccessDenied] here is what the consumer's pulls would
// meet, silently, later. Each broker gets its own time bound. When no
// broker answers at all it returns [ErrAccessUnverified]; with persist it
// first asks the name servers again until ctx ends.
func CheckSubscribe(ctx context.Context, creds Credentials, namesrvs []string, group, topic string, persist bool) error {
	route, err := RouteOf(ctx, namesrvs, topic)
	for persist && err != nil && !errors.Is(err, ErrNoRoute) && ctx.Err() == nil {
		// A name server slow to answer once: ask again while ctx lasts.
		select {
		case <-ctx.Done():
		case <-time.After(200 * time.Millisecond):
		}
		route, err = RouteOf(ctx, namesrvs, topic)
	}
	if err != nil {
		return fmt.Errorf("%w: route of %s: %w", ErrAccessUnverified, topic, err)
	}
	var errs []error
	answered := false
	for _, b := range route.BrokerDatas {
		addr := b.BrokerAddrs["0"]
		if addr == "" {
			continue
		}
		// A pull of queue -1: the ACL checks it fully (SUB on the topic and
		// the group) before the broker looks at it, and the broker then
		// refuses the queue id before reading, committing, registering or
		// resetting anything.
		req := &Command{Code: ReqPullMessage, ExtFields: map[string]string{
			"consumerGroup": group, "topic": topic, "queueId": "-1", "queueOffset": "0", "maxMsgNums": "1",
			"sysFlag": "0", "commitOffset": "0", "suspendTimeoutMillis": "0", "subscription": "*",
			"subVersion": "0", "expressionType": "TAG"}}
		resp, err := invokeSigned(ctx, addr, req, creds)
		if err != nil {
			errs = append(errs, fmt.Errorf("broker %s: %w", b.BrokerName, err))
			continue
		}
		answered = true
		if reason, denied := ACLRefusal(resp.Remark); denied {
			return fmt.Errorf("%w on broker %s: %s", ErrAccessDenied, b.BrokerName, reason)
		}
	}
	if !answered && len(errs) == 0 {
		return fmt.Errorf("%w: the route of %s names no master broker", ErrAccessUnverified, topic)
	}
	if !answered {
		return fmt.Errorf("%w: %w", ErrAccessUnverified, errors.Join(errs...))
	}
	return nil
}

// Ping asks the name server at addr for a route and reports whether it
// answered at all (any answer counts): a server that accepts connections
// but never answers is as unreachable as one that refuses them.
func Ping(ctx context.Context, addr string) error {
	_, err := invokeOnce(ctx, addr, &Command{Code: ReqGetRouteInfoByTopic, ExtFields: map[string]string{"topic": "TBW102"}})
	return err
}
