package config

import (
	"fmt"

	"go.temporal.io/sdk/client"

	"github.com/airlock-dev/airlock/codec"
)

// PayloadCodec builds the payload codec from the configured keys.
func (c Config) PayloadCodec() (*codec.Codec, error) {
	spec, err := c.CodecKeys()
	if err != nil {
		return nil, err
	}
	keys, err := codec.ParseKeys(spec)
	if err != nil {
		return nil, err
	}
	return codec.New(keys)
}

// Dial connects to Temporal with the payload codec installed, so nothing
// this process writes to history is in clear.
func (c Config) Dial(opts client.Options) (client.Client, error) {
	pc, err := c.PayloadCodec()
	if err != nil {
		return nil, err
	}
	opts.HostPort = c.Temporal.Address
	opts.Namespace = c.Temporal.Namespace
	opts.DataConverter = pc.DataConverter()
	cl, err := client.Dial(opts)
	if err != nil {
		return nil, fmt.Errorf("dial temporal at %s: %w", c.Temporal.Address, err)
	}
	return cl, nil
}
