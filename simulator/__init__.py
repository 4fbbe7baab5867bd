"""An offline look-alike of Safaricom's Daraja API and of the customer's handset.

It imports nothing from the gateway or the pages; it is configured by its own settings.

- `settings`: what it reads from the environment (`load_simulator_settings`).
- `models`: the core (`SimulatedDaraja`: OAuth, customers, prompts, settlement), no HTTP; its
  plain parts: `validation` (Daraja's body and Password checks), `ids` (identifiers), `faults`
  (injected faults), `callbacks` (the callback queue), `limits` (Apigee's limits), `journal`.
- `wire`: Daraja's Password, timestamps and callback bodies; `phones`: the phone rule;
  `scenarios`: the test numbers; `result_codes`: Daraja's texts; `exceptions`: one class per error.
- HTTP: `responses` (Daraja's wire format), `control` (the control API), `pages` (the handset and
  overview), `urls` (the route tables), `app` (mounted or standalone), `runner` (the clock-driven
  loop that answers scripted prompts and delivers callbacks), `streams` (server-sent events).
- For other projects' tests: `testing.start_simulator`, the pytest plugin, the `sim` command (`cli`).
"""
