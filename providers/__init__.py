"""Provider adapters: one module per upstream wire protocol, plus the shared pieces they use.

Everything here is independent of Flask: adapters turn a `ChatCall` into a stream of
`providers.events` and know nothing about how the gateway relays them.
"""
