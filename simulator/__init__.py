"""An offline look-alike of Safaricom's Daraja API and of the customer's handset.

`models` holds the state and rules (no HTTP), `responses` the wire format, `exceptions` one class
per Daraja error, `urls` the route tables, `runner` the clock-driven loop that answers scripted
prompts and delivers callbacks.
"""
