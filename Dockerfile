# Kiln's image: API and worker share it (the command picks which).
FROM node:20-bookworm-slim AS build
WORKDIR /app
COPY package.json package-lock.json turbo.json tsconfig.base.json prisma.config.ts ./
COPY prisma ./prisma
COPY packages ./packages
COPY apps ./apps
COPY scripts/run-app.sh ./scripts/
# The root's dependencies include the build tools, since `npm start` builds; the image is built
# already, so it drops them with the test tools.
RUN npm ci --omit=dev && npm run build && \
    rm -rf node_modules/typescript node_modules/turbo node_modules/@turbo node_modules/prisma node_modules/@types

FROM node:20-bookworm-slim
ENV NODE_ENV=production
WORKDIR /app
COPY --from=build /app /app
USER node
EXPOSE 8080
CMD ["scripts/run-app.sh", "api"]
