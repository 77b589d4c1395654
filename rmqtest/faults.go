package rmqtest

import (
	"time"

	"github.com/seed157d4c4d/reliablemq/internal/remoting"
)

// RequestCode names a request the broker serves, for [Broker.Inject].
type RequestCode int

// Request codes that faults can target.
const (
	SendMessage          RequestCode = remoting.ReqSendMessage
	SendBatchMessage     RequestCode = remoting.ReqSendBatchMessage
	PullMessage          RequestCode = remoting.ReqPullMessage
	HeartBeat            RequestCode = remoting.ReqHeartBeat
	QueryConsumerOffset  RequestCode = remoting.ReqQueryConsumerOffset
	UpdateConsumerOffset RequestCode = remoting.ReqUpdateConsumerOffset
	ConsumerSendMsgBack  RequestCode = remoting.ReqConsumerSendMsgBack
	EndTransaction       RequestCode = remoting.ReqEndTransaction
	GetConsumerList      RequestCode = remoting.ReqGetConsumerListByGroup
	LockBatchMQ          RequestCode = remoting.ReqLockBatchMQ
	UnlockBatchMQ        RequestCode = remoting.ReqUnlockBatchMQ
	GetRouteInfo         RequestCode = remoting.ReqGetRouteInfoByTopic
	UpdateAndCreateTopic RequestCode = remoting.ReqUpdateAndCreateTopic
)

// Response codes a [Fault] may answer with.
const (
	CodeSystemError         = remoting.CodeSystemError
	CodeServiceNotAvailable = remoting.CodeServiceNotAvailable
	CodeNoPermission        = remoting.CodeNoPermission
	CodeMessageIllegal      = remoting.CodeMessageIllegal
	CodeTopicNotExist       = remoting.CodeTopicNotExist
	CodeFlushDiskTimeout    = remoting.CodeFlushDiskTimeout
	CodeSlaveNotAvailable   = remoting.CodeSlaveNotAvailable
)

// Fault is what the broker does to the next requests of one code. Exactly
// one of Code, DropReply and Delay is normally set.
type Fault struct {
	// Times is how many requests the fault applies to. Zero means once.
	Times int
	// Code answers the request with this response code and Remark without
	// processing it (a send is not stored).
	Code   int
	Remark string
	// DropReply processes the request (a send is stored) but sends no
	// reply, so the client times out: the lost-ack case.
	DropReply bool
	// Delay processes the request and sends the reply after this much real
	// time.
	Delay time.Duration
}

type fault struct {
	Fault
	left int
}

// Inject queues f for the next requests with the given code. Faults for one
// code apply in the order they were injected.
func (b *Broker) Inject(code RequestCode, f Fault) {
	n := f.Times
	if n <= 0 {
		n = 1
	}
	b.mu.Lock()
	b.faults[int(code)] = append(b.faults[int(code)], &fault{Fault: f, left: n})
	b.mu.Unlock()
}

// ClearFaults drops every fault not yet applied.
func (b *Broker) ClearFaults() {
	b.mu.Lock()
	clear(b.faults)
	b.mu.Unlock()
}

func (b *Broker) takeFault(code int) *fault {
	b.mu.Lock()
	defer b.mu.Unlock()
	list := b.faults[code]
	if len(list) == 0 {
		return nil
	}
	f := list[0]
	if f.left--; f.left == 0 {
		b.faults[code] = list[1:]
	}
	return f
}

func (b *Broker) applyFault(c *conn, req *remoting.Command, f *fault) *remoting.Command {
	if f.Code != 0 {
		return response(f.Code, f.Remark)
	}
	resp := b.dispatch(c, req)
	if f.DropReply || resp == nil {
		return nil
	}
	if f.Delay > 0 {
		b.wg.Add(1)
		go func() {
			defer b.wg.Done()
			t := time.NewTimer(f.Delay)
			defer t.Stop()
			select {
			case <-t.C:
				b.reply(c, req, resp)
			case <-b.stop:
			}
		}()
		return nil
	}
	return resp
}
