// SERVICE_SCHEDULING=leastconn's dispatcher with the transport SERVICE_HANDOFF names; imported by
// the pool only for leastconn.
import type { Settings } from '../config/settings.js';
import { nativeHandoff } from '../native-handoff.js';
import type { Logger } from '../telemetry/logger.js';
import { Dispatcher, type DispatcherOptions } from './dispatch.js';
import type { Transport } from './handoff.js';
import { IpcTransport } from './handoff-ipc.js';
import { NativeTransport } from './handoff-native.js';

/** The dispatcher, or why the service cannot start (SERVICE_HANDOFF=native, not built). */
export function createDispatcher(
  s: Settings,
  log: Logger,
  guard: DispatcherOptions['guard'],
): Dispatcher | string {
  const opts = { log, guard, host: s.SERVICE_HOST, port: s.SERVICE_PORT };
  let transport: Transport<unknown>;
  if (s.SERVICE_HANDOFF === 'ipc') {
    transport = new IpcTransport(opts) as Transport<unknown>;
  } else {
    const { native, why } = nativeHandoff();
    if (native) {
      transport = new NativeTransport(native, opts) as Transport<unknown>;
    } else if (s.SERVICE_HANDOFF === 'native') {
      return `SERVICE_HANDOFF=native, but the native handoff ${why}`;
    } else {
      log.warn(
        `leastconn hands connections over node:cluster IPC, at about 4x the primary's CPU per connection: the native handoff ${why}`,
      );
      transport = new IpcTransport(opts) as Transport<unknown>;
    }
  }
  log.debug('leastconn: the primary hands connections over', { handoff: transport.kind });
  return new Dispatcher(transport, { log, guard });
}
