// natsgo-storm: a login storm of stock nats.go clients, for the storm benchmark
// (server/benches/storm.rs), which builds and runs it.
//
// It reads one client a line from standard input: the client's nkey seed, its inbox
// prefix ("-" for the default) and its user JWT ("-" for none). All clients then connect to
// the URL given as the only argument at the same moment, with nats.go's default options (a
// 2 s connect timeout among them) and no reconnection. A client whose connect fails tries
// again after a random 200 to 600 ms, at most 3 times. A client counts once a message it
// publishes to its own inbox comes back, and stays connected until every client is done.
// Last it prints one line of JSON: how many got in,
// how many on the first try, each one's time from the start, and why the failed attempts
// failed.
package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand"
	"net"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
)

// Retries after the first attempt, and the pause before each.
const (
	retries  = 3
	minPause = 200 * time.Millisecond
	maxPause = 600 * time.Millisecond
)

type client struct {
	seed, inbox, jwt string
}

type report struct {
	Clients  int `json:"clients"`
	Admitted int `json:"admitted"`
	FirstTry int `json:"first_try"`
	// Each admitted client's time from the start, in milliseconds, sorted.
	LatenciesMs []float64 `json:"latencies_ms"`
	// Failed attempts by their error's text (every timeout as "timeout").
	Errors map[string]int `json:"errors"`
}

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: natsgo-storm <nats url> < clients")
		os.Exit(2)
	}
	url := os.Args[1]
	var clients []client
	lines := bufio.NewScanner(os.Stdin)
	lines.Buffer(make([]byte, 64*1024), 1024*1024)
	for lines.Scan() {
		fields := strings.Fields(lines.Text())
		if len(fields) != 3 {
			continue
		}
		clients = append(clients, client{fields[0], fields[1], fields[2]})
	}
	if err := lines.Err(); err != nil {
		fmt.Fprintln(os.Stderr, "reading the clients:", err)
		os.Exit(1)
	}

	var (
		mu     sync.Mutex
		out    = report{Clients: len(clients), Errors: map[string]int{}}
		conns  []*nats.Conn
		wg     sync.WaitGroup
		starts = make(chan struct{})
	)
	started := time.Now()
	for i, c := range clients {
		wg.Add(1)
		go func(i int, c client) {
			defer wg.Done()
			pauses := rand.New(rand.NewSource(time.Now().UnixNano() + int64(i)))
			<-starts
			for attempt := 0; attempt <= retries; attempt++ {
				if attempt > 0 {
					pause := minPause + time.Duration(pauses.Int63n(int64(maxPause-minPause)))
					time.Sleep(pause)
				}
				nc, err := login(url, c)
				mu.Lock()
				if err == nil {
					conns = append(conns, nc)
					out.Admitted++
					if attempt == 0 {
						out.FirstTry++
					}
					out.LatenciesMs = append(out.LatenciesMs, float64(time.Since(started).Microseconds())/1e3)
					mu.Unlock()
					return
				}
				out.Errors[kind(err)]++
				mu.Unlock()
			}
		}(i, c)
	}
	started = time.Now()
	close(starts)
	wg.Wait()
	for _, nc := range conns {
		nc.Close()
	}
	sort.Float64s(out.LatenciesMs)
	if err := json.NewEncoder(os.Stdout).Encode(out); err != nil {
		os.Exit(1)
	}
}

// kind names an error the way the report counts it: without the addresses of a network
// error, which differ from one connection to the next.
func kind(err error) string {
	var netErr net.Error
	switch {
	case errors.As(err, &netErr) && netErr.Timeout(), errors.Is(err, nats.ErrTimeout):
		return "timeout"
	case errors.As(err, &netErr):
		return "network error"
	}
	return err.Error()
}

// login connects once and makes a round trip on the client's own inbox; on an error it
// closes the connection again.
func login(url string, c client) (*nats.Conn, error) {
	kp, err := nkeys.FromSeed([]byte(c.seed))
	if err != nil {
		return nil, err
	}
	sign := func(nonce []byte) ([]byte, error) { return kp.Sign(nonce) }
	var options []nats.Option
	if c.jwt != "-" {
		jwt := c.jwt
		options = append(options, nats.UserJWT(func() (string, error) { return jwt, nil }, sign))
	} else {
		public, err := kp.PublicKey()
		if err != nil {
			return nil, err
		}
		options = append(options, nats.Nkey(public, sign))
	}
	if c.inbox != "-" {
		options = append(options, nats.CustomInboxPrefix(c.inbox))
	}
	options = append(options, nats.NoReconnect())
	nc, err := nats.Connect(url, options...)
	if err != nil {
		return nil, err
	}
	inbox := nc.NewInbox()
	echo, err := nc.SubscribeSync(inbox)
	if err == nil {
		err = nc.Publish(inbox, nil)
	}
	if err == nil {
		_, err = echo.NextMsg(5 * time.Second)
	}
	if err != nil {
		nc.Close()
		return nil, err
	}
	return nc, nil
}
