# Kiln's image: API and worker share it (the command picks which).
FROM node:20-bookworm-slim AS build
WORKDIR /app
COPY package.json package-lock.json turbo.json tsconfig.base.json prisma.config.ts ./
COPY prisma ./prisma
COPY packages ./packages
COPY apps ./apps
COPY scripts/run-app.sh ./scripts/
RUN npm ci && npm run build && npm prune --omit=dev

FROM node:20-bookworm-slim
ENV NODE_ENV=production
WORKDIR /app
COPY --from=build /app /app
USER node
EXPOSE 8080
CMD ["scripts/run-app.sh", "api"]
