// OpenAPI operations for the link tool tests.

/** An operation as the link service describes them (x-display/x-from on the parameter schema). */
export const WEATHER_OP = {
  operationId: 'get_weather',
  description: '查询天气',
  parameters: [
    {
      name: 'city',
      in: 'query',
      description: 'city name',
      required: true,
      schema: { type: 'string', 'x-from': 0 },
    },
    {
      name: 'unit',
      in: 'query',
      description: 'unit',
      schema: { type: 'string', 'x-display': false, default: 'C' },
    },
    { name: 'days', in: 'query', schema: { type: 'integer', 'x-display': true, default: 1 } },
    {
      name: 'token',
      in: 'header',
      description: 'auth',
      schema: { type: 'string', 'x-from': 1, default: 'tkn' },
    },
    { name: 'X-Trace', in: 'header', schema: { type: 'string', 'x-from': 0 } },
    { name: 'id', in: 'path', schema: { type: 'string', 'x-from': 0 } },
  ],
  requestBody: {
    content: {
      'application/json': {
        schema: {
          type: 'object',
          required: ['options', 'lang'],
          properties: {
            lang: { type: 'string', description: 'language', 'x-from': 0, default: 'zh' },
            hidden: { type: 'string', 'x-display': false, default: 'h' },
            free: { type: 'string', description: 'no rule' },
            options: {
              type: 'object',
              required: ['detail', 'ghost'],
              properties: {
                detail: { type: 'boolean', description: 'detailed', 'x-display': true },
                biz: { type: 'string', 'x-from': 1, default: 'b' },
                deep: {
                  type: 'object',
                  properties: { level: { type: 'integer', 'x-from': 0, default: 3 } },
                },
              },
            },
          },
        },
      },
    },
  },
};
